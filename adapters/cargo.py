"""cargo as a source of facts: workspace layout from `cargo metadata` (offline, no dependency resolution)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


class CargoError(Exception):
    """cargo is missing or the directory is not a cargo workspace."""


@dataclass
class Target:
    crate: str
    name: str
    kind: str  # lib, bin, test, bench, example, custom-build, proc-macro...
    src_path: str  # workspace-relative
    root_dir: str  # directory of src_path, workspace-relative


@dataclass
class Crate:
    name: str
    root: str  # workspace-relative directory of its manifest ('' for the root package)
    manifest: str
    is_member: bool = True
    features: list[str] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)


@dataclass
class Layout:
    root: Path
    crates: list[Crate]
    targets: list[Target]


def _rel(root: Path, p: str) -> str:
    try:
        return Path(p).resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(p).as_posix()


def metadata(workspace: Path, timeout: float = 120.0) -> Layout:
    """Members, targets, features and declared dependencies; works offline and without a lockfile."""
    if shutil.which("cargo") is None:
        raise CargoError("cargo not found on PATH (install a Rust toolchain with rustup, or use --no-cargo)")
    if not (workspace / "Cargo.toml").is_file():
        raise CargoError(f"{workspace} is not a cargo workspace (no Cargo.toml; use --no-cargo to ingest files by path)")
    cmd = ["cargo", "metadata", "--offline", "--format-version", "1", "--no-deps",
           "--manifest-path", str(workspace / "Cargo.toml")]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "CARGO_TERM_COLOR": "never"})
    except subprocess.TimeoutExpired:
        raise CargoError(f"cargo metadata timed out after {timeout:.0f}s") from None
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        msg = next((ln for ln in lines if ln.startswith("error")), lines[0] if lines else "failed")
        raise CargoError(f"cargo metadata failed in {workspace}: {msg.strip()}")
    data = json.loads(out.stdout)
    root = Path(data.get("workspace_root") or workspace).resolve()
    members = set(data.get("workspace_members") or [])
    crates, targets = [], []
    for pkg in data.get("packages", []):
        manifest_dir = Path(pkg["manifest_path"]).resolve().parent
        rel_root = "" if manifest_dir == root else _rel(root, str(manifest_dir))
        deps = sorted({(d.get("rename") or d["name"]) for d in pkg.get("dependencies", []) if d.get("kind") != "dev"})
        crates.append(Crate(pkg["name"], rel_root, _rel(root, pkg["manifest_path"]), pkg["id"] in members or not members,
                            sorted(k for k in (pkg.get("features") or {}) if k != "default") +
                            (["default"] if "default" in (pkg.get("features") or {}) else []), deps))
        for t in pkg.get("targets", []):
            src = _rel(root, t["src_path"])
            targets.append(Target(pkg["name"], t["name"], (t.get("kind") or ["lib"])[0], src,
                                  str(Path(src).parent.as_posix()) if "/" in src else ""))
    return Layout(root, crates, targets)


def plain_layout(workspace: Path) -> Layout:
    """--no-cargo: one pseudo-crate named after the directory, `src/` as its root when present."""
    name = workspace.resolve().name or "workspace"
    crate = Crate(name, "", "", True, [], [])
    targets = []
    for cand in ("src/lib.rs", "src/main.rs"):
        if (workspace / cand).is_file():
            targets.append(Target(name, name, "lib" if cand.endswith("lib.rs") else "bin", cand, "src"))
    return Layout(workspace.resolve(), [crate], targets)
