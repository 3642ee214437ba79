"""Make dvc.yaml's code deps of every stage its import closure (what tests/test_dag_deps.py
checks), after a module is added, moved or starts importing another.

    python scripts/sync_code_deps.py            # rewrite the src/ deps in dvc.yaml
    python scripts/sync_code_deps.py --lock     # also record the new files' hashes in dvc.lock

``--lock`` is for a change that moves code without changing any output (a refactor whose
outputs you have compared byte for byte): it records the code deps' current md5 and size in
dvc.lock, so `dvc status` is clean without rerunning the stages. After any other change, run
`dvc repro` instead, which writes dvc.lock itself.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from ruamel.yaml import YAML  # dvc's own YAML library: keeps dvc.yaml's comments and layout

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_dag_deps import import_closure  # noqa: E402  (the one definition of the closure)

from musicrec import registry  # noqa: E402


def code_deps(deps: list, module: str) -> None:
    """Replace, in place, the ``src/`` entries of ``deps`` by ``module``'s import closure, in
    path order after the other deps (dvc.yaml's order)."""
    others = [d for d in deps if not str(d).startswith("src/")]
    deps[:] = others + sorted(import_closure(module))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", action="store_true", help="also update dvc.lock's code deps")
    args = parser.parse_args(argv)
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    dvc_yaml = REPO / "dvc.yaml"
    dag = yaml.load(dvc_yaml)
    for stage in registry.STAGES:
        code_deps(dag["stages"][stage.name]["deps"], stage.module)
    yaml.dump(dag, dvc_yaml)
    if not args.lock:
        return 0
    lock_path = REPO / "dvc.lock"
    yaml = YAML()  # dvc.lock in dvc's own layout: lists not indented under their key
    yaml.width = 100
    lock = yaml.load(lock_path)
    for stage in registry.STAGES:
        wanted = [d for d in dag["stages"][stage.name]["deps"] if d.startswith("src/")]
        kept = [d for d in lock["stages"][stage.name]["deps"] if not d["path"].startswith("src/")]
        code = [
            {"path": d, "hash": "md5", "md5": _md5(REPO / d), "size": (REPO / d).stat().st_size}
            for d in wanted
        ]
        lock["stages"][stage.name]["deps"] = sorted(kept + code, key=lambda d: d["path"])
    yaml.dump(lock, lock_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
