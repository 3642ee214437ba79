"""No file the pipeline reads can run code: a static check of every load in the package."""

from __future__ import annotations

import ast

from conftest import REPO

SOURCES = sorted((REPO / "src" / "musicrec").rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return ast.literal_eval(keyword.value)
    return None


def test_every_load_in_the_package_refuses_pickles():
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in {"pickle", "dill", "cloudpickle"} for n in names):
                    problems.append(f"{where}:{node.lineno}: imports a pickle module")
        for call, name in _calls(tree):
            line = f"{where}:{call.lineno}: {name}"
            if name == "torch.load" and _keyword(call, "weights_only") is not True:
                problems.append(f"{line} without weights_only=True")
            if name.endswith(("np.load", "numpy.load")) and _keyword(call, "allow_pickle"):
                problems.append(f"{line} with allow_pickle")
            if name in {"joblib.load", "pd.read_pickle", "pandas.read_pickle", "yaml.load"}:
                problems.append(f"{line} can run code from the file it reads")
    assert SOURCES and not problems, "\n".join(problems)
