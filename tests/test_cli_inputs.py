"""Bad input and first use, as a new user meets them: PATH arguments, two commands at once on a
new workspace, huge query texts, unknown seeds, a bad or damaged database, read-only commands in
a fresh directory, files skipped by ingest. Each answer is one line and a fixed exit code."""
from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES
from parseltongue.runner.api import Pt
from parseltongue.runner.errors import UsageError

PT = str(Path(sys.executable).parent / "pt")


@pytest.fixture
def geo(tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "ingest_ws", ws)
    return ws


def files_in_graph(ws: Path) -> set[str]:
    with Pt.open(ws) as p:
        return {r[0] for r in p.store.run("?[f] := *file_state{file_path: f}").rows}


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ PATH arguments

def test_ingest_dot_means_the_whole_workspace(pt, geo, monkeypatch):
    monkeypatch.chdir(geo)
    r = pt("ingest", ".", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["files_skipped"] == [] and doc["files_parsed"] == 6 and doc["nodes"] > 30


def test_a_directory_means_the_files_under_it(pt, geo, monkeypatch):
    assert pt("-C", str(geo), "ingest").code == 0
    circle = geo / "geo/src/shapes/circle.rs"
    circle.write_text(circle.read_text() + "\npub fn extra_fn() {}\n")
    (geo / "geo/src/units.rs").unlink()
    (geo / "app/src/main.rs").write_text("fn main() {}\n")  # outside the directory named: untouched
    monkeypatch.chdir(geo / "geo")  # `src` is read from the current directory
    doc = pt("ingest", "src", "--json").json()
    assert (doc["files_total"], doc["files_parsed"], doc["files_removed"]) == (3, 1, 1)
    assert doc["files_skipped"] == []
    with Pt.open(geo) as p:
        assert p.query("node", id="fn:geo/src/shapes/circle.rs::extra_fn")
    assert "geo/src/units.rs" not in files_in_graph(geo)
    assert pt("-C", str(geo), "status", "--json").json()["stale_files"]["changed"] == 1  # main.rs


@pytest.mark.parametrize("arg", ["/etc/passwd", "../other/src/lib.rs", "OTHER_ABS", "geo/../../other"])
def test_paths_outside_the_workspace_are_refused(pt, geo, monkeypatch, arg):
    other = geo.parent / "other/src/lib.rs"
    other.parent.mkdir(parents=True)
    other.write_text("pub fn stolen() {}\n")
    arg = str(other) if arg == "OTHER_ABS" else arg
    monkeypatch.chdir(geo)
    assert pt("ingest").code == 0
    r = pt("ingest", arg)
    assert r.code == 2 and "outside the workspace" in r.err and one_line(r.err), r.err
    assert not any("other" in f or "passwd" in f for f in files_in_graph(geo))
    for cmd in (["hydrate", arg], ["context", f"{arg}:1"]):
        r = pt(*cmd)
        assert r.code == 2 and "outside the workspace" in r.err, (cmd, r.err)


def test_a_symlink_out_of_the_workspace_is_outside(pt, geo, tmp_path):
    (tmp_path / "secret.rs").write_text("pub fn secret() {}\n")
    (geo / "geo/src/link.rs").symlink_to(tmp_path / "secret.rs")
    r = pt("-C", str(geo), "ingest", str(geo / "geo/src/link.rs"))
    assert r.code == 2 and "outside the workspace" in r.err


# ------------------------------------------------------------------ first use, concurrently

def test_first_use_by_two_commands_at_once(geo):
    """`rm -rf .parseltongue && (pt ingest & pt status & wait)`, several times: both succeed,
    and nothing but their own output reaches stderr (no schema conflict, no Rust panic)."""
    for _ in range(6):
        shutil.rmtree(geo / ".parseltongue", ignore_errors=True)
        procs = [subprocess.Popen([PT, *args], cwd=geo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for args in (["ingest"], ["status"], ["query", "search", "-p", "query=area"])]
        outs = [(p.args[1], *p.communicate(timeout=120), p.returncode) for p in procs]
        for cmd, _out, err, code in outs:
            assert code == 0, (cmd, err)
            assert "panicked" not in err and "locked" not in err and "schema rev" not in err, (cmd, err)


def test_a_lock_that_outlasts_the_wait_is_one_line_and_exit_4(geo):
    assert subprocess.run([PT, "ingest"], cwd=geo, capture_output=True).returncode == 0
    env = {**os.environ, "PT_LOCK_WAIT": "0.3"}
    con = sqlite3.connect(geo / ".parseltongue/graph.db", isolation_level=None)
    try:
        con.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
        for cmd in (["status"], ["query", "search", "-p", "query=area"], ["ingest"], ["context", "geo/src/lib.rs:1"]):
            r = subprocess.run([PT, *cmd], cwd=geo, capture_output=True, text=True, env=env, timeout=60)
            assert r.returncode == 4, (cmd, r.returncode, r.stderr)
            assert one_line(r.stderr) and "is busy" in r.stderr and "PT_LOCK_WAIT" in r.stderr, (cmd, r.stderr)
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_a_reader_waits_for_a_schema_being_created(geo):
    assert subprocess.run([PT, "ingest"], cwd=geo, capture_output=True).returncode == 0
    fd = os.open(geo / ".parseltongue/graph.db.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a process creating or migrating the database does
        r = subprocess.run([PT, "status"], cwd=geo, capture_output=True, text=True,
                           env={**os.environ, "PT_LOCK_WAIT": "0.3"}, timeout=60)
        assert r.returncode == 4 and one_line(r.stderr) and "creating or migrating" in r.stderr, r.stderr
        waiting = subprocess.Popen([PT, "status", "--json"], cwd=geo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env={**os.environ, "PT_LOCK_WAIT": "30"})
    finally:
        os.close(fd)  # released: the waiting reader goes on
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err


# ------------------------------------------------------------------ huge query texts

def test_huge_query_texts_do_not_crash(geo):
    """A 6,000-word search and a 120 KB --query used to segfault (exit 139) in Cozo's FTS parser."""
    assert subprocess.run([PT, "ingest"], cwd=geo, capture_output=True).returncode == 0
    words = " ".join(f"word{i}" for i in range(6000))
    r = subprocess.run([PT, "query", "search", "-p", f"query={words}"], cwd=geo, capture_output=True, text=True)
    assert r.returncode == 0, (r.returncode, r.stderr[-300:])
    code = ((FIXTURES / "ingest_ws/geo/src/shapes/circle.rs").read_text() + "\n") * 200
    code = code[:120_000]
    r = subprocess.run([PT, "context", "geo/src/shapes/circle.rs:10", "--query", code], cwd=geo,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "CONTEXT END" in r.stdout, (r.returncode, r.stderr[-300:])


# ------------------------------------------------------------------ unknown seeds

def test_unknown_seeds_are_named_and_none_known_exits_2(pt, geo):
    assert pt("-C", str(geo), "ingest").code == 0
    known, typo = "fn:geo/src/shapes/circle.rs::<impl Circle>::with_radius", "fn:geo/src/nope.rs::ghost"
    r = pt("-C", str(geo), "query", "two_hop", "-p", f"seeds={typo}")
    assert r.code == 2 and typo in r.err and one_line(r.err) and r.out == "", r.err
    r = pt("-C", str(geo), "query", "two_hop", "-p", f"seeds={known},{typo}", "--json")
    assert r.code == 0 and typo in r.err and known not in r.err
    assert known in {row["id"] for row in r.json()["rows"]}
    r = pt("-C", str(geo), "context", typo)
    assert r.code == 2 and typo in r.err and one_line(r.err)
    r = pt("-C", str(geo), "context", known, typo, "--json")
    assert r.code == 0 and typo in r.err and r.json()["nodes"]


# ------------------------------------------------------------------ bad or damaged database

def test_a_db_in_a_missing_directory_is_bad_input(pt, geo):
    for cmd in (["status"], ["ingest"], ["query", "search", "-p", "query=x"], ["doctor"]):
        r = pt("-C", str(geo), "--db", "/proc/nope/graph.db", *cmd)
        if cmd == ["doctor"]:
            assert r.code == 1 and "no such directory" in r.out, r.out
        else:
            assert r.code == 2 and one_line(r.err) and "/proc/nope" in r.err, (cmd, r.err)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_db_is_one_line_naming_the_rebuild(geo, damage):
    assert subprocess.run([PT, "ingest"], cwd=geo, capture_output=True).returncode == 0
    db = geo / ".parseltongue/graph.db"
    if damage == "truncated":
        with open(db, "r+b") as fh:
            fh.truncate(db.stat().st_size // 2)
    else:
        db.write_bytes(b"not a database at all" * 100)
    for cmd in (["status"], ["ingest"], ["query", "search", "-p", "query=area"]):
        r = subprocess.run([PT, *cmd], cwd=geo, capture_output=True, text=True)
        assert r.returncode == 2, (cmd, r.returncode, r.stderr)
        assert one_line(r.stderr) and "damaged" in r.stderr and "pt init --rebuild" in r.stderr, (cmd, r.stderr)
        assert "panicked" not in r.stderr
    doctor = subprocess.run([PT, "doctor"], cwd=geo, capture_output=True, text=True)
    assert doctor.returncode == 1 and "pt init --rebuild" in doctor.stdout and "close the process" not in doctor.stdout
    r = subprocess.run([PT, "init", "--rebuild"], cwd=geo, capture_output=True, text=True)
    assert r.returncode == 0 and (geo / ".parseltongue/graph.db.bak").exists(), r.stderr
    assert subprocess.run([PT, "ingest"], cwd=geo, capture_output=True).returncode == 0
    assert subprocess.run([PT, "status"], cwd=geo, capture_output=True).returncode == 0


# ------------------------------------------------------------------ read-only commands

def test_read_only_commands_create_nothing(pt, tmp_path, monkeypatch):
    empty = tmp_path / "somewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    r = pt("status")
    assert r.code == 0 and "pt ingest" in r.out
    r = pt("query", "search", "-p", "query=anything", "--json")
    assert r.code == 0 and r.json()["rows"] == [] and "pt ingest" in r.err
    assert pt("query", "two_hop", "-p", "seeds=fn:x").code == 2
    assert pt("doctor").code in (0, 1)
    with Pt.open(empty, create=False) as p:  # the API: a writer through a read-only open is refused
        with pytest.raises(UsageError, match="there is none"):
            p.run("preflight.set_policy", {"key": "error_gate", "value": "new"})
    assert list(empty.iterdir()) == []


def test_the_state_dir_ignores_itself_in_git(pt, geo):
    assert pt("-C", str(geo), "ingest").code == 0
    assert (geo / ".parseltongue/.gitignore").read_text() == "*\n"
    subprocess.run(["git", "init", "-q", str(geo)], check=True)
    listed = subprocess.run(["git", "-C", str(geo), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    assert ".parseltongue" not in listed and "Cargo.toml" in listed


# ------------------------------------------------------------------ skipped files

def test_skipped_files_stay_skipped_on_the_next_ingest(pt, geo):
    (geo / "geo/src/latin1.rs").write_bytes(b"// caf\xe9\nfn f() {}\n")
    (geo / "geo/src/blob.rs").write_bytes(b"\x00\x01\x02")
    for _ in range(2):
        doc = pt("-C", str(geo), "ingest", "--json").json()
        assert {f for f, _ in doc["files_skipped"]} == {"geo/src/latin1.rs", "geo/src/blob.rs"}
        assert doc["files_unchanged"] + doc["files_parsed"] + len(doc["files_skipped"]) == doc["files_total"] == 8
    assert doc["files_parsed"] == 0 and doc["files_unchanged"] == 6


# ------------------------------------------------------------------ a fresh clone's setup

def test_building_the_package_prints_no_setuptools_warnings(tmp_path):
    """`make demo` on a fresh clone printed ~400 lines of setuptools warnings (every folder under
    rules/ "would be ignored"): the package builds quietly; a real error would still show."""
    from conftest import REPO

    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                        "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    noise = [ln for ln in r.stderr.splitlines() if ln.strip() and "Location 'file:" not in ln]  # this machine's index
    assert not noise, noise[:20]
