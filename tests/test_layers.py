"""Which way dependencies run: the source of truth for the README's architecture section.

    storage  <-  domain  <-  web (Flask app, API, pages, webhook)
                         <-  jobs (RQ jobs)
    entry points (wsgi, the worker, `make run`, CLI tools) may import any layer.

`storage/` knows nothing of the rest; the domain (`bot/` modules outside the web app: policy,
reasons, personalisation, refs, the Graph client, events parsing, ...) imports only `storage/`
and libraries; the web app hands work to the workers by the job's dotted name, never importing
`jobs/`. A project module imported inside a function (usually to dodge a cycle) and a cycle of
module-level imports are errors too; a package's `__init__` importing its own submodules (a
blueprint registering its routes) is not.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "jobs", "storage", "sandbox")
ENTRY_POINTS = {
    "wsgi",
    "jobs.worker",
    "bot.launch",
    "bot.rotate_tokens",
    "bot.reapply_webhooks",
    "bot.engine",
    "sandbox.__main__",
}
WEB = {"bot.app", "bot.webhook", "bot.handlers", "bot.health", "bot.facebook_callbacks"}
WEB_PACKAGES = ("bot.api", "bot.pages")
MAY_IMPORT = {
    "storage": {"storage"},
    "domain": {"storage", "domain"},
    "web": {"storage", "domain", "web"},
    "jobs": {"storage", "domain", "jobs"},
    "sandbox": {"sandbox"},  # the Facebook simulator stands apart: it is Facebook
    "entry": {"storage", "domain", "web", "jobs", "sandbox", "entry"},
}


def layer(module: str) -> str:
    if module in ENTRY_POINTS:
        return "entry"
    top = module.split(".")[0]
    if top in ("storage", "jobs", "sandbox"):
        return top
    if module in WEB or module.startswith(WEB_PACKAGES):
        return "web"
    return "domain"


def project_modules() -> dict[str, Path]:
    found = {"wsgi": ROOT / "wsgi.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The project modules `module` imports (`from a import b` counts b if it is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    nested = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.append(Import(module, name, node.lineno, id(node) in nested))
    return found


def all_imports() -> list[Import]:
    modules = project_modules()
    return [
        i for module, path in sorted(modules.items()) for i in imports_of(module, path, modules)
    ]


def violations() -> set[tuple[str, str, str]]:
    found = set()
    for i in all_imports():
        if layer(i.imported) not in MAY_IMPORT[layer(i.importer)]:
            found.add((i.importer, i.imported, "upward"))
        elif i.in_function and layer(i.importer) != "entry":
            found.add((i.importer, i.imported, "inside a function"))
    return found


def cycles() -> list[list[str]]:
    """Cycles of module-level imports (a package importing its own submodules left out)."""
    graph: dict[str, set[str]] = {}
    for i in all_imports():
        if not i.in_function and not i.imported.startswith(i.importer + "."):
            graph.setdefault(i.importer, set()).add(i.imported)
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_dependencies_run_one_way():
    found = sorted(violations())
    assert found == [], "imports against the layers (see this module's docstring):\n" + "\n".join(
        map(str, found)
    )


def test_no_module_level_import_cycle():
    assert cycles() == []


def test_the_layers_are_told_apart():
    assert [
        layer(m)
        for m in (
            "storage.runs",
            "bot.policy",
            "bot.graph",
            "bot.api.runs",
            "bot.pages.stats",
            "bot.app",
            "jobs.runs",
            "jobs.worker",
            "wsgi",
        )
    ] == ["storage", "domain", "domain", "web", "web", "web", "jobs", "entry", "entry"]
    assert ("storage.x", "bot.errors", "upward") in _violations_of({"storage.x": ["bot.errors"]})


def _violations_of(edges: dict[str, list[str]]) -> set[tuple[str, str, str]]:
    return {
        (a, b, "upward")
        for a, targets in edges.items()
        for b in targets
        if layer(b) not in MAY_IMPORT[layer(a)]
    }
