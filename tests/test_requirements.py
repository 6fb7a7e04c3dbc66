"""The two requirements files: the service runs on requirements.txt alone, everything is pinned."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import distributions, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("bot", "jobs", "storage", "sandbox")
RUNTIME_FILES = ("wsgi.py", "gunicorn.conf.py")


def pins(name: str) -> dict[str, str]:
    """{normalised distribution name: version} of one requirements file, its includes too."""
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found.update(pins(line[3:].strip()))
        elif line:
            dist, sep, version = line.partition("==")
            assert sep, f"{name}: {line!r} is not pinned with =="
            found[normalise(dist)] = version
    return found


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def runtime_sources() -> list[Path]:
    files = [ROOT / f for f in RUNTIME_FILES]
    for package in RUNTIME_PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def test_the_service_imports_only_what_requirements_txt_installs():
    runtime = pins("requirements.txt")
    owners = packages_distributions()
    outside = {}
    for path in runtime_sources():
        for name in imported_top_levels(path):
            if name in sys.stdlib_module_names or name in RUNTIME_PACKAGES or name not in owners:
                continue  # the standard library or our own code (a name no distribution provides)
            dists = {normalise(d) for d in owners[name]}
            if not dists & runtime.keys():
                outside.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert outside == {}, (
        f"imported by the service but only in requirements-dev.txt or nowhere: {outside}"
    )


def test_dev_requirements_add_the_test_tools_to_the_runtime_ones():
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert runtime.items() <= dev.items()
    for tool in ("pytest", "hypothesis", "playwright", "schemathesis"):
        assert tool in dev and tool not in runtime


def test_everything_installed_is_pinned_at_its_installed_version():
    """The venv of `make test` holds exactly what requirements-dev.txt pins (nothing drifts in)."""
    dev = pins("requirements-dev.txt")
    installed = {normalise(d.metadata["Name"]): d.version for d in distributions()}
    installed = {
        name: version
        for name, version in installed.items()
        if name not in ("pip", "setuptools", "wheel")
    }
    assert installed == dev
