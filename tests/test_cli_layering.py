"""The layers of the package, read from the source: click only in the cli* modules, no import
cycles, no private names taken from another module, adapters that do not run programs."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("runner", "adapters")


def modules() -> dict[str, ast.Module]:
    """'runner.cli' -> its syntax tree, for every module of the package."""
    return {f"{pkg}.{p.stem}": ast.parse(p.read_text(encoding="utf-8"), str(p))
            for pkg in PACKAGES for p in sorted((REPO / pkg).glob("*.py")) if p.stem != "__init__"}


def imports(name: str, tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module imported, names taken) for every import in the module, nested ones included
    (an import inside a function to dodge a cycle is still a dependency)."""
    pkg = name.split(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append((node.module or "", [a.name for a in node.names]))
                continue
            base = pkg if node.level == 1 else ""
            target = ".".join(x for x in (base, node.module or "") if x)
            if node.module is None or (node.level == 2 and "." not in target):
                # `from . import programs as P`, `from ..adapters import cargo`: each name is a module
                out += [(f"{target}.{a.name}" if target else a.name, []) for a in node.names]
            else:
                out.append((target, [a.name for a in node.names]))
    return out


def test_click_only_in_cli_modules():
    users = sorted(name for name, tree in modules().items()
                   if any(mod.split(".")[0] == "click" for mod, _ in imports(name, tree)))
    assert users and all(u.startswith("runner.cli") for u in users), users


def test_no_import_cycles():
    mods = modules()
    graph = {name: {mod for mod, _ in imports(name, tree) if mod in mods and mod != name}
             for name, tree in mods.items()}
    cycles = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name], done)
    assert cycles == [], cycles


def test_no_private_names_across_modules():
    mods = modules()
    found = []
    for name, tree in mods.items():
        aliases = set()
        for mod, names in imports(name, tree):
            if mod in mods or mod.split(".")[0] in PACKAGES:
                found += [f"{name}: from {mod} import {n}" for n in names if n.startswith("_")]
        for node in ast.walk(tree):  # `from . import programs as P` ... `P._private`
            if isinstance(node, ast.ImportFrom) and node.level and node.module is None:
                aliases |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 2:
                aliases |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{name}: {node.value.id}.{node.attr}")
    assert found == [], found


def test_adapters_do_not_run_programs():
    """Adapters turn the world into facts; running programs (and deciding) is the runner's."""
    found = []
    for name, tree in modules().items():
        if not name.startswith("adapters."):
            continue
        found += [f"{name}: imports {mod}" for mod, _ in imports(name, tree) if mod.startswith("runner")]
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("run", "query")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "pt"):
                found.append(f"{name}:{node.lineno}: pt.{node.func.attr}(...)")
    assert found == [], found
