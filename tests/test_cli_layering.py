"""The layers of the package, read from the source: click only in the cli* modules, no import
cycles, no private names taken from another module, adapters that do not run programs."""
from __future__ import annotations

import ast

from conftest import REPO

PACKAGES = ("runner", "adapters")


def modules() -> dict[str, ast.Module]:
    """'runner.cli' -> its syntax tree, for every module of the package (subpackages included)."""
    out = {}
    for pkg in PACKAGES:
        for p in sorted((REPO / pkg).rglob("*.py")):
            parts = p.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = ast.parse(p.read_text(encoding="utf-8"), str(p))
    return out


def imports(name: str, tree: ast.Module, known: set[str]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken) for every import in the module, nested ones included
    (an import inside a function to dodge a cycle is still a dependency). `from . import x` and
    `from ..adapters import cargo` import modules."""
    package = name.split(".")[:-1] if name in known and not _is_package(name) else name.split(".")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - (node.level - 1)] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names = []
            for a in node.names:
                if f"{target}.{a.name}" in known:
                    out.append((f"{target}.{a.name}", []))
                else:
                    names.append(a.name)
            if names:
                out.append((target, names))
    return out


def _is_package(name: str) -> bool:
    return (REPO / name.replace(".", "/") / "__init__.py").is_file()


def test_click_only_in_cli_modules():
    mods = modules()
    users = sorted(name for name, tree in mods.items()
                   if any(mod.split(".")[0] == "click" for mod, _ in imports(name, tree, set(mods))))
    assert users and all(u.split(".")[-1].startswith("cli") for u in users), users


def test_no_import_cycles():
    mods = modules()
    graph = {name: {mod for mod, _ in imports(name, tree, set(mods)) if mod in mods and mod != name}
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
        for mod, names in imports(name, tree, set(mods)):
            if mod in mods:
                found += [f"{name}: from {mod} import {n}" for n in names if n.startswith("_")]
        for node in ast.walk(tree):  # `from . import programs as P` ... `P._private`
            if isinstance(node, ast.ImportFrom):
                aliases |= {a.asname or a.name for a in node.names if a.name not in ("annotations",)
                            and any(m.endswith("." + a.name) for m in mods)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{name}: {node.value.id}.{node.attr}")
    assert found == [], found


def test_adapters_do_not_run_programs():
    """Adapters turn the world into facts; running programs (and deciding) is the runner's."""
    found, mods = [], modules()
    for name, tree in mods.items():
        if not name.startswith("adapters."):
            continue
        found += [f"{name}: imports {mod}" for mod, _ in imports(name, tree, set(mods)) if mod.startswith("runner")]
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("run", "query")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "pt"):
                found.append(f"{name}:{node.lineno}: pt.{node.func.attr}(...)")
    assert found == [], found


def test_product_code_does_not_read_tests():
    """pt's code knows no test layout: a golden case names its fixture, the runner only resolves it.
    (A path built as `root / "tests"`, or a literal 'tests/fixtures'.)"""
    found = []
    for name, tree in modules().items():
        docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            if id(node) in docs:  # docstrings may give examples
                continue
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                    and node.right.value in ("tests", "fixtures")):
                found.append(f"{name}:{node.lineno}: / {node.right.value!r}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "tests/fixtures" in node.value:
                found.append(f"{name}:{node.lineno}: {node.value[:40]!r}")
    assert found == [], found


def test_ingest_and_query_leave_heavy_modules_unimported(tmp_path):
    """A no-change `pt ingest` takes ~1 s, and importing the rust-analyzer client (its LSP types:
    ~0.5 s) or the golden runner would be a large part of it: `pt ingest` without --hydrate and
    `pt query` import neither."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    ws = tmp_path / "ws"
    shutil.copytree(REPO / "tests" / "fixtures" / "ingest_ws", ws, ignore=shutil.ignore_patterns("target", ".parseltongue"))
    heavy = ("lsprotocol", "pygls", "parseltongue.runner.hydrate", "parseltongue.adapters.rust_analyzer",
             "parseltongue.runner.golden")
    probe = ("import sys; from parseltongue.runner.cli import main; main(sys.argv[1:]); "
             f"print('LOADED', [m for m in sys.modules if m.startswith({heavy!r})])")
    for args in (["ingest", "--json"], ["ingest", "--json"], ["query", "counts", "--json"]):
        out = subprocess.run([sys.executable, "-c", probe, "-C", str(ws), *args], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PT_DOBBY": "0"})
        assert out.returncode == 0, out.stderr
        loaded = json.loads(out.stdout.rsplit("LOADED ", 1)[1].replace("'", '"'))
        assert loaded == [], (args, loaded)
