"""dvc.yaml names, for each stage, exactly the package's source files the stage runs: the
import closure of its module. A code change then re-runs what it can change, and nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml
from conftest import REPO

from musicrec import registry

SRC = REPO / "src"


def _module_file(name: str) -> Path | None:
    """The file of a ``musicrec`` module, or None for anything else."""
    if name != "musicrec" and not name.startswith("musicrec."):
        return None
    base = SRC / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Every musicrec module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from musicrec import registry``: the names may be modules themselves.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if _module_file(name) is not None}


def _stages_run(path: Path) -> set[str]:
    """The modules of the stages a module runs by name: its ``RUNS_STAGES`` tuple (the
    ``folds`` stage runs the training stages on each cold fold)."""
    modules = {s.name: s.module for s in registry.STAGES}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "RUNS_STAGES" for t in node.targets
        ):
            return {modules[name] for name in ast.literal_eval(node.value)}
    return set()


def import_closure(module: str) -> set[str]:
    """The source files (relative to the repository) ``module`` runs, itself included, and
    those of the stages it runs by name (:func:`_stages_run`)."""
    seen: set[Path] = set()
    todo = [_module_file(module)]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(_module_file(name) for name in _imports(path) | _stages_run(path))
    # Package __init__ files are left out: they hold a docstring and the version, nothing a
    # stage computes with (the last test holds them to that), and every stage would re-run
    # when the version changes.
    return {str(p.relative_to(REPO)) for p in seen if p.name != "__init__.py"}


def test_every_stage_depends_on_exactly_the_code_it_imports():
    dag = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in registry.STAGES:
        listed = {d for d in dag[stage.name]["deps"] if d.startswith("src/")}
        expected = import_closure(stage.module)
        assert listed == expected, (
            f"{stage.name}: missing {sorted(expected - listed)}, extra {sorted(listed - expected)}"
        )


def test_package_init_files_hold_no_code_a_stage_runs():
    """Only a docstring and constant assignments, so leaving them out of the deps is safe."""
    for init in SRC.rglob("__init__.py"):
        for node in ast.parse(init.read_text()).body:
            is_docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            is_constant = isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            assert is_docstring or is_constant, f"{init}: {ast.dump(node)[:80]}"


def test_no_import_cycle_in_the_package():
    """Every import counts, those inside functions too: a cycle means two modules that cannot
    be read, changed or tested apart."""
    graph = {
        path: {_module_file(name) for name in _imports(path)} - {path}
        for path in SRC.rglob("*.py")
        if path.name != "__init__.py"
    }
    state: dict[Path, str] = {}

    def visit(path: Path, trail: list[Path]) -> None:
        state[path] = "open"
        for other in graph.get(path, ()):
            if other is None or other.name == "__init__.py":
                continue
            cycle = trail[trail.index(other) :] if state.get(other) == "open" else []
            assert not cycle, " -> ".join(str(p.relative_to(SRC)) for p in [*cycle, other])
            if other not in state:
                visit(other, [*trail, other])
        state[path] = "done"

    for path in graph:
        if path not in state:
            visit(path, [path])


def test_the_hybrids_and_evaluate_follow_every_model_they_read():
    """A change to an audio model re-runs the hybrids that may pick it (those scored with WMF's
    user factors: not the DBN's, which learn their own); any model, evaluate."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    audio = {f"data/models/{m}" for m in registry.models(family=registry.CONTENT) if "dbn" not in m}
    assert audio and audio <= set(stages["hybrid"]["deps"])
    assert {f"data/models/{m}" for m in registry.MODEL_NAMES} <= set(stages["evaluate"]["deps"])
