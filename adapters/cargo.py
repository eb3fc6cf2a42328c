"""cargo as a source of facts: workspace layout from `cargo metadata` (offline, no dependency resolution),
and diagnostics from `cargo check` / `cargo test --message-format=json` (PreFlight)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
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


# ------------------------------------------------------------------ cargo check / cargo test (PreFlight)

_SUMMARY = re.compile(r"^(aborting due to|\d+ warnings? emitted|.*generated \d+ warnings?|For more information about)")
_TEST_LINE = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)")
_SEVERITY = {"error": "error", "error: internal compiler error": "error", "warning": "warning"}


@dataclass
class CompilerDiagnostic:
    """One rustc/cargo diagnostic at its primary span, placed in the workspace when possible."""

    severity: str  # error, warning or info (note/help at top level)
    code: str  # E0425, unused_variables, ...; 'cargo' for a cargo-level failure; '' when rustc gives none
    message: str
    file: str = ""  # workspace-relative; '' when no span lies in the workspace
    byte_start: int = -1
    byte_end: int = -1
    line: int = 0
    col: int = 0
    rendered: str = ""
    # rustc's machine-readable fixes: {file, byte_start, byte_end, replacement, applicability}
    suggestions: list = field(default_factory=list)
    # every span in the workspace, the main message's (part 0) and its children's (part 1..):
    # {part, level, message, file, byte_start, byte_end, line, is_primary, label, replacement, applicability}
    spans: list = field(default_factory=list)


@dataclass
class CaseOutcome:
    name: str  # libtest path, e.g. tests::adds_up
    outcome: str  # ok, FAILED, ignored


@dataclass
class CargoRun:
    diagnostics: list
    success: bool  # cargo's own verdict (build-finished, or the exit status)
    returncode: int
    elapsed_s: float
    timed_out: bool = False
    stderr_tail: str = ""
    tests: list = field(default_factory=list)


def _in_workspace(root: Path, file_name: str) -> str | None:
    """rustc names workspace files relative to the workspace root (cargo runs it there) and
    others absolutely (dependencies, std); macro spans may say `<...macros>`."""
    if not file_name or file_name.startswith("<"):
        return None
    p = Path(file_name)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return None


def _place(root: Path, spans: list) -> tuple[str, dict | None]:
    """The primary span, followed up through macro expansions until it lands in the workspace."""
    span = next((s for s in spans if s.get("is_primary")), spans[0] if spans else None)
    while span is not None:
        rel = _in_workspace(root, span.get("file_name", ""))
        if rel is not None:
            return rel, span
        span = (span.get("expansion") or {}).get("span")
    return "", None


def _suggestions(root: Path, msg: dict) -> list:
    out = []
    for child in msg.get("children") or []:
        for s in child.get("spans") or []:
            if s.get("suggested_replacement") is None:
                continue
            rel = _in_workspace(root, s.get("file_name", ""))
            if rel is None:
                continue
            out.append({"file": rel, "byte_start": s["byte_start"], "byte_end": s["byte_end"],
                        "replacement": s["suggested_replacement"],
                        "applicability": s.get("suggestion_applicability") or "Unspecified",
                        "message": child.get("message", "")})
    return out


def _all_spans(root: Path, msg: dict) -> list:
    """What the fix patterns read: labels ("expected due to this"), notes ("defined here") and
    the spans of each suggestion, in workspace files only."""
    out = []
    parts = [(0, "main", "", msg.get("spans") or [])]
    parts += [(i, c.get("level", ""), c.get("message", ""), c.get("spans") or [])
              for i, c in enumerate(msg.get("children") or [], start=1)]
    for part, level, text, spans in parts:
        for s in spans:
            rel = _in_workspace(root, s.get("file_name", ""))
            if rel is None:
                continue
            out.append({"part": part, "level": level, "message": text, "file": rel,
                        "byte_start": s["byte_start"], "byte_end": s["byte_end"], "line": s.get("line_start", 0),
                        "is_primary": bool(s.get("is_primary")), "label": s.get("label") or "",
                        "replacement": s.get("suggested_replacement"),
                        "applicability": s.get("suggestion_applicability") or ""})
    return out


def parse_messages(lines, root: Path) -> tuple[list, bool | None, list]:
    """`cargo ... --message-format=json` stdout -> (diagnostics, build success or None, other lines).

    Summary messages ("aborting due to ...", "N warnings emitted") are dropped, and so are repeats
    (the same diagnostic reported for a lib and its test target)."""
    diags, seen, other, success = [], set(), [], None
    for line in lines:
        line = line.rstrip("\n")
        if not line.startswith("{"):
            other.append(line)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            other.append(line)
            continue
        reason = obj.get("reason")
        if reason == "build-finished":
            success = bool(obj.get("success"))
            continue
        if reason != "compiler-message":
            continue
        msg = obj.get("message") or {}
        level, text = msg.get("level", ""), msg.get("message", "")
        if level == "failure-note" or (not msg.get("spans") and _SUMMARY.match(text)):
            continue
        rel, span = _place(root, msg.get("spans") or [])
        d = CompilerDiagnostic(
            severity=_SEVERITY.get(level, "info"), code=((msg.get("code") or {}).get("code") or ""), message=text,
            file=rel, byte_start=span["byte_start"] if span else -1, byte_end=span["byte_end"] if span else -1,
            line=span["line_start"] if span else 0, col=span["column_start"] if span else 0,
            rendered=msg.get("rendered") or "", suggestions=_suggestions(root, msg), spans=_all_spans(root, msg))
        key = (d.severity, d.code, d.message, d.file, d.byte_start, d.byte_end)
        if key not in seen:
            seen.add(key)
            diags.append(d)
    return diags, success, other


def _cargo_failure(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    first = next((ln for ln in lines if ln.startswith("error")), lines[-1] if lines else "cargo failed")
    # cargo's "error: could not compile `x`" follows rustc's own errors; it adds nothing to them.
    return first


class CargoJob:
    """A running `cargo ... --message-format=json`; `wait()` parses what it printed.

    Started and waited for separately so the caller can do its own bookkeeping while rustc runs
    (PreFlight writes the candidate's rows to the graph meanwhile)."""

    def __init__(self, cmd: list, cwd: Path, target_dir: Path | None, timeout: float, root: Path):
        if shutil.which("cargo") is None:
            raise CargoError("cargo not found on PATH (install a Rust toolchain with rustup)")
        env = {**os.environ, "CARGO_TERM_COLOR": "never"}
        if target_dir is not None:
            env["CARGO_TARGET_DIR"] = str(target_dir)  # never the user's target/, never a stray env value
        self.cmd, self.timeout, self.root = cmd, timeout, root
        self.t0 = time.perf_counter()
        # Own process group: a timeout must kill rustc and build scripts too, not just cargo.
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, errors="replace", start_new_session=True)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.communicate()

    def wait(self) -> CargoRun:
        proc, timed_out = self.proc, False
        try:
            out, err = proc.communicate(timeout=max(0.0, self.timeout - (time.perf_counter() - self.t0)))
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
        elapsed = time.perf_counter() - self.t0
        diags, success, other = parse_messages(out.splitlines(), self.root)
        ok = (success if success is not None else proc.returncode == 0) and not timed_out
        if timed_out:
            diags.append(CompilerDiagnostic("error", "pt-timeout",
                                            f"`{' '.join(self.cmd[:2])}` timed out after {self.timeout:.0f}s"))
        elif proc.returncode != 0 and not any(d.severity == "error" for d in diags) and success is not True:
            # cargo itself failed (bad manifest, missing dependency offline...): no rustc message says so.
            diags.append(CompilerDiagnostic("error", "cargo", _cargo_failure(err)))
        tests = []
        for line in other:
            m = _TEST_LINE.match(line)
            if m:
                tests.append(CaseOutcome(m.group(1), m.group(2)))
        return CargoRun(diags, ok, proc.returncode, elapsed, timed_out, "\n".join(err.splitlines()[-20:]), tests)


@dataclass(frozen=True)
class Features:
    """Which cargo features a check compiles: `--features a,b`, `--all-features`,
    `--no-default-features` (the defaults when all are empty)."""
    names: tuple = ()
    all: bool = False
    no_default: bool = False

    def args(self) -> list:
        return ((["--features", ",".join(self.names)] if self.names else []) + (["--all-features"] if self.all else [])
                + (["--no-default-features"] if self.no_default else []))

    def key(self) -> str:
        """'' for cargo's defaults; else what a stored check of one tree is keyed by, besides its scope."""
        return " ".join(self.args())

    def as_dict(self) -> dict:
        return {"features": list(self.names), "all_features": self.all, "no_default_features": self.no_default}


def features_table(workspace: Path, manifest: str) -> list:
    """[[feature, what it enables], ...] of a crate's `[features]` table (`default` included), from
    its manifest; [] when it has none or cannot be read."""
    import tomllib

    try:
        data = tomllib.loads((workspace / manifest).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    table = data.get("features") or {}
    return [[str(k), str(v)] for k, vs in sorted(table.items()) if isinstance(vs, list) for v in vs] + \
        [[str(k), ""] for k, vs in sorted(table.items()) if not vs]


def _selection(packages: list | None) -> list:
    if not packages:
        return ["--workspace"]
    return [arg for p in packages for arg in ("-p", p)]


def start_check(workspace: Path, *, packages: list | None = None, all_targets: bool = False,
                features: Features = Features(), target_dir: Path | None = None, timeout: float = 600.0) -> CargoJob:
    """Start `cargo check --message-format=json` (offline) on the given packages, or the whole workspace."""
    cmd = ["cargo", "check", "--offline", "--message-format=json", *_selection(packages), *features.args()]
    if all_targets:
        # --keep-going: one failing target (a bench) must not hide the errors of the others (a
        # test, an example) - a fix of one would then "reveal" the next as a new error.
        cmd += ["--all-targets", "--keep-going"]
    return CargoJob(cmd, workspace, target_dir, timeout, workspace)


def check(workspace: Path, **kw) -> CargoRun:
    """`start_check(...)` and wait for it."""
    return start_check(workspace, **kw).wait()


def run_tests(workspace: Path, *, packages: list | None = None, filters: list | None = None,
              features: Features = Features(), target_dir: Path | None = None, timeout: float = 900.0) -> CargoRun:
    """`cargo test` of the tests whose names contain one of `filters`; compile errors come as
    diagnostics, each failed test as an error diagnostic `test-failed`."""
    cmd = ["cargo", "test", "--offline", "--no-fail-fast", "--message-format=json", *_selection(packages),
           *features.args(), "--", *(filters or [])]
    run = CargoJob(cmd, workspace, target_dir, timeout, workspace).wait()
    for t in run.tests:
        if t.outcome == "FAILED":
            run.diagnostics.append(CompilerDiagnostic("error", "test-failed", f"test {t.name} failed"))
    if not run.success and not any(d.severity == "error" for d in run.diagnostics):
        run.diagnostics.append(CompilerDiagnostic("error", "cargo", _cargo_failure(run.stderr_tail)))
    return run


DEBIAN_REGISTRY = Path("/usr/share/cargo/registry")


def debian_source_config(registry: Path = DEBIAN_REGISTRY) -> str:
    """`.cargo/config.toml` text that builds offline from Debian's `librust-*-dev` crate sources."""
    return (f'[source.crates-io]\nreplace-with = "debian"\n\n[source.debian]\ndirectory = "{registry}"\n\n'
            f"[net]\noffline = true\n")
