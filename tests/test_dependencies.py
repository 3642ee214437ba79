"""pyproject.toml states ranges; constraints.txt is the verified set inside them."""

import tomllib

from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_ranges_not_pins_and_every_verified_version_inside_them():
    project = _project()
    assert "<3.12" not in project["requires-python"]
    pins = _pins()
    requirements = [Requirement(r) for r in project["dependencies"]]
    for reqs in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in reqs if not r.startswith("musicrec")]
    for req in requirements:
        name = canonicalize_name(req.name)
        exact = [s for s in req.specifier if s.operator == "=="]
        if req in [Requirement(r) for r in project["dependencies"]]:
            assert not exact, f"{req}: a library states a range, not a pin"
        assert name in pins or name == "rmm-cu13", f"{req.name} is not in constraints.txt"
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])


def test_optional_parts_are_extras_and_what_serve_imports_is_declared():
    extras = _project()["optional-dependencies"]
    core = {canonicalize_name(Requirement(r).name) for r in _project()["dependencies"]}
    serve = {canonicalize_name(Requirement(r).name) for r in extras["serve"]}
    assert {"fastapi", "uvicorn", "pydantic", "python-multipart"} <= serve
    assert {"fastapi", "uvicorn", "dask", "playwright"}.isdisjoint(core)
    assert any(r.startswith("dask[distributed]") for r in extras["dask"])
    assert "musicrec[serve,dask]" in extras["dev"]  # the tests exercise every extra
