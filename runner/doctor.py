"""`pt doctor`: what pt needs from this machine, what it found, and what to do when it is missing."""
from __future__ import annotations

import shutil
import subprocess
from typing import Any


def _version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def _check(name: str, ok: bool, detail: str, fix: str = "", required: bool = True) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail, "fix": fix, "required": required}


def _rust_analyzer() -> dict[str, Any]:
    try:
        from ..adapters import rust_analyzer as ra
    except ImportError as exc:
        return _check("rust-analyzer", False, f"adapter unavailable: {exc}", required=False)
    try:
        binary = ra.find_rust_analyzer()
    except Exception as exc:  # noqa: BLE001 - doctor reports, never fails on a probe
        return _check("rust-analyzer", False, f"probe failed: {exc}", required=False)
    if binary is None:
        return _check("rust-analyzer", False, "not found (pt works on tree-sitter facts alone)",
                      "pip install 'parseltongue[ra]', or set PT_RUST_ANALYZER=/path/to/rust-analyzer",
                      required=False)
    info = ra.describe(binary)
    return _check("rust-analyzer", True, f"{binary.path} ({binary.version}, from {binary.source}); "
                  f"mode={info.get('mode')} procMacro={'on' if info.get('procMacro') else 'off'}", required=False)


def run_checks(ctx) -> list[dict[str, Any]]:
    checks = []
    for tool in ("cargo", "rustc"):
        v = _version([tool, "--version"]) if shutil.which(tool) else None
        checks.append(_check(tool, v is not None, v or "not found on PATH",
                             "install a Rust toolchain with rustup (https://rustup.rs) and put it on PATH"))
    sysroot = _version(["rustc", "--print", "sysroot"])
    if sysroot:
        from pathlib import Path

        has_src = (Path(sysroot) / "lib/rustlib/src/rust/library").is_dir()
        checks.append(_check("rust-src", has_src, "present" if has_src else
                             "missing: rust-analyzer runs without the standard library (noSysroot)",
                             "rustup component add rust-src", required=False))
    checks.append(_rust_analyzer())
    checks.append(_database(ctx))
    return checks


def _database(ctx) -> dict[str, Any]:
    from .api import Pt
    from .errors import Busy, PtError

    try:
        with Pt.open(ctx.workspace, ctx.db, init=False, create=False) as pt:
            rev, latest = pt.current_rev(), pt.latest_rev()
            where = f"{pt.store.path or 'mem'} ({pt.store.engine})"
            if pt.missing:
                return _check("database", True, pt.missing)
    except Busy as exc:
        return _check("database", False, exc.message, "wait for the other pt (ingest, watch, fix) to finish")
    except PtError as exc:  # a damaged file says how to rebuild it
        fix = "" if "rebuild" in exc.message else "check --db / PT_DB"
        return _check("database", False, exc.message, fix)
    if rev == latest:
        return _check("database", True, f"{where}, schema rev {rev}")
    if rev == 0:
        return _check("database", True, f"{where}, empty (built by `pt ingest`)")
    return _check("database", False, f"{where}, schema rev {rev} (this pt: {latest})", "run `pt init`")
