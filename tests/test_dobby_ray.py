"""Dobby on real Ray, over its real socket, with the real CLI. Runs only inside the loopback-only
network + PID namespace that tests/test_dobby.py::test_ray_suite_in_a_loopback_only_namespace
makes (PT_DOBBY_NETNS=1): Ray is never started on the host network.

Order matters and is the file's order: a memory-starved daemon first (stale socket, guard,
shutdown leaves no Ray process), then the main daemon (methods, the CLI through it, a killed
worker, two clients, shutdown draining), then ingest on a two-node Ray cluster."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

if os.environ.get("PT_DOBBY_NETNS") != "1":
    pytest.skip("runs inside the loopback-only namespace that test_dobby.py starts", allow_module_level=True)

from parseltongue.runner.dobby import client  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PT = str(Path(sys.executable).with_name("pt"))
SEED = "fn:src/geometry.rs::total_area"
MODEL = "gemma3-270m-q4_k_m"


def ray_processes() -> list[tuple[int, str]]:
    """(pid, command line) of Ray's processes in this PID namespace (its /proc shows no other)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in ("raylet", "gcs_server", "ray::", "/ray/_private/", "/ray/dashboard/",
                                  "/ray/autoscaler/")):
            out.append((int(d.name), cmd[:120]))
    return out


def rust_analyzers() -> list[tuple[int, str]]:
    """rust-analyzer processes in this PID namespace."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                exe = os.readlink(d / "exe")
            except OSError:
                continue
            if "rust-analyzer" in exe or "RustAnalyzer" in exe:
                out.append((int(d.name), exe))
    return out


def run_pt(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([PT, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check:
        assert r.returncode == 0, f"pt {' '.join(args)} -> {r.returncode}: {r.stderr[-2000:]}"
    return r


class Daemon:
    def __init__(self, home: Path, *extra: str, env: dict | None = None):
        self.sock = str(home / "dobby.sock")
        self.env = {**os.environ, **(env or {}), "PARSELTONGUE_HOME": str(home), "SOCKET_PATH": self.sock}
        self.log = open(home / f"serve-{time.monotonic_ns()}.log", "w")
        self.proc = subprocess.Popen([PT, "dobby", "serve", *extra], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dobby exited with {self.proc.returncode}: {self.logs()}"
            try:
                if client.call(self.sock, "ping", {}, timeout=5)["pong"]:
                    return
            except client.DobbyError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"dobby did not answer within {timeout}s: {self.logs()}")

    def call(self, method: str, params: dict | None = None, timeout: float = 300):
        return client.call(self.sock, method, params or {}, timeout=timeout)

    def logs(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def home() -> Path:
    # short (Unix socket names are limited to ~107 bytes) and unique: this suite's pid is the
    # same small number in every PID namespace, so concurrent runs must not share a name
    d = Path(tempfile.mkdtemp(prefix="pt-dobby-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """The example workspace, ingested without Dobby."""
    ws = tmp_path_factory.mktemp("ws") / "shapes"
    shutil.copytree(REPO / "examples" / "shapes", ws)
    run_pt("-C", str(ws), "ingest", env={"PT_DOBBY": "0"})
    return ws


def rows_of(doc: dict) -> list:
    return [[r[h] for h in doc["headers"]] for r in doc["rows"]] if doc["rows"] and isinstance(doc["rows"][0], dict) \
        else doc["rows"]


# ------------------------------------------------------------------ a memory-starved daemon

@pytest.fixture(scope="class")
def starved(home):
    sub = home / "starved"
    sub.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sub / "dobby.sock"))
    stale.close()  # a socket file left by a daemon that crashed
    d = Daemon(sub, "--mem-limit-mb", "700")
    d.wait_ready()
    yield d
    d.stop()


class TestGuardedDaemon:
    def test_stale_socket_was_replaced(self, starved):
        assert starved.call("ping")["pong"] is True
        assert "replacing a stale socket" in starved.logs()

    def test_a_second_daemon_on_a_live_socket_is_refused(self, starved):
        r = subprocess.run([PT, "dobby", "serve"], env=starved.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "already running" in r.stderr

    def test_memory_guard_refuses_workers_and_models(self, starved):
        st = starved.call("get_status")
        assert st["mem_free_mb"] == 700 and st["workers"] == []
        with pytest.raises(client.DobbyError) as e:
            starved.call("open_worker", {"kind": "cpu"})
        assert e.value.code == -32020 and "only 700 MB are free" in e.value.message
        starved.call("ensure_model", {"name": MODEL})
        with pytest.raises(client.DobbyError) as e:
            starved.call("completion", {"prompt": "fn main() {", "max_tokens": 4})
        assert e.value.code == -32020 and "LLM worker" in e.value.message
        assert starved.call("get_status")["workers"] == []

    def test_shutdown_leaves_no_ray_process(self, starved):
        assert ray_processes(), "Ray should be running while the daemon is"
        r = run_pt("dobby", "shutdown", "--graceful-timeout", "10", env=starved.env)
        assert "dobby stopped" in r.stdout
        starved.proc.wait(60)
        deadline = time.monotonic() + 30
        while ray_processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray_processes() == []
        assert not os.path.exists(starved.sock)


# ------------------------------------------------------------------ the main daemon

@pytest.fixture(scope="module")
def dobby(home):
    sub = home / "main"
    sub.mkdir(exist_ok=True)
    d = Daemon(sub)
    d.wait_ready()
    yield d
    d.stop()


def test_ping_and_status(dobby):
    assert dobby.call("ping")["pong"] is True
    st = dobby.call("get_status")
    assert st["ray"]["nodes"] == 1 and st["ray"]["cpus"] >= 1
    assert [w["kind"] for w in st["workers"]] == ["cpu"]
    assert st["mem_free_mb"] > 0 and st["limits"]["llm_workers"] == 1
    assert 1 <= st["limits"]["cpu_workers"] <= min(5, os.cpu_count())
    assert set(st["queues"]) >= {"cpu", "llm", "writer"}
    assert any(m["model"] == MODEL for m in st["models"])


def test_the_dobby_commands_and_json_logs(dobby):
    """`pt dobby status|call|ensure-model` against the running daemon; its log is JSON lines."""
    st = run_pt("dobby", "status", env=dobby.env).stdout
    assert st.startswith(f"dobby pid {dobby.proc.pid} on {dobby.sock}") and "cpu-1" in st
    assert json.loads(run_pt("dobby", "status", "--json", env=dobby.env).stdout)["pid"] == dobby.proc.pid
    assert json.loads(run_pt("dobby", "call", "ping", env=dobby.env).stdout)["pong"] is True
    for args, says in ((["nosuch"], "nosuch"), (["ping", "[1]"], "JSON object"), (["ping", "{oops"], "not valid JSON")):
        r = run_pt("dobby", "call", *args, env=dobby.env, check=False)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    ensured = json.loads(run_pt("dobby", "ensure-model", MODEL, env=dobby.env).stdout)
    assert ensured["model"] == MODEL and len(ensured["sha256"]) == 64
    lines = Path(dobby.log.name).read_text().splitlines()
    assert len(lines) > 5
    for line in lines:
        doc = json.loads(line)  # every line: Dobby's own, and Ray's warnings too
        assert {"ts", "level", "msg"} <= set(doc), line
    assert any(json.loads(line)["msg"] == "serving" for line in lines)


def test_run_task_a2_equals_pt_query_two_hop(dobby, shapes):
    cold = json.loads(run_pt("-C", str(shapes), "query", "two_hop", "-p", f'seeds=["{SEED}"]', "--json",
                             env={"PT_DOBBY": "0"}).stdout)
    got = dobby.call("run_task", {"agent": "A2", "payload": {"workspace": str(shapes), "seeds": [SEED]}})
    assert got["headers"] == cold["headers"]
    assert got["rows"] == rows_of(cold) and len(got["rows"]) > 1


def test_run_task_a1_and_a3(dobby, shapes):
    a1 = dobby.call("run_task", {"agent": "A1", "payload": {"workspace": str(shapes)}})
    assert a1["success"] is False
    assert {e["node_id"] for e in a1["errors"]} == {"fn:src/report.rs::count_by_name"}
    assert not (shapes / "target").exists()  # A1 builds in Dobby's own target dir
    a3 = dobby.call("run_task", {"agent": "A3", "payload": {"workspace": str(shapes), "query": "total_area"}})
    assert SEED in [r[0] for r in a3["rows"]]
    with pytest.raises(client.DobbyError) as e:
        dobby.call("run_task", {"agent": "A9", "payload": {"workspace": str(shapes)}})
    assert e.value.code == -32602


def served(dobby) -> int:
    return sum(w["served"] for w in dobby.call("get_status")["workers"] if w["kind"] == "cpu")


def test_the_cli_uses_the_running_dobby(dobby, shapes):
    """pt query / context through Dobby print what they print without it; the worker counts them."""
    for args in (["query", "two_hop", "-p", f'seeds=["{SEED}"]', "--json"],
                 ["query", "two_hop", "-p", f'seeds=["{SEED}"]'],
                 ["context", "src/report.rs:8", "--budget", "400", "--json"]):
        before = served(dobby)
        warm = run_pt("-C", str(shapes), *args, env=dobby.env)
        assert served(dobby) == before + 1, args
        cold = run_pt("-C", str(shapes), *args, env={**dobby.env, "PT_DOBBY": "0"})
        assert warm.stdout == cold.stdout, args


def test_unknown_seeds_are_named_through_dobby_as_without_it(dobby, shapes):
    """An unknown seed is named on stderr (some known) or refused with exit 2 (none known), warm or cold."""
    for seeds, code in ((f'seeds=["{SEED}","fn:src/nope.rs::gone"]', 0), ('seeds=["fn:src/nope.rs::gone"]', 2)):
        args = ["query", "two_hop", "-p", seeds, "--json"]
        warm = run_pt("-C", str(shapes), *args, env=dobby.env, check=False)
        cold = run_pt("-C", str(shapes), *args, env={**dobby.env, "PT_DOBBY": "0"}, check=False)
        assert (warm.returncode, cold.returncode) == (code, code), (warm.stderr, cold.stderr)
        assert "fn:src/nope.rs::gone" in warm.stderr and "fn:src/nope.rs::gone" in cold.stderr
        assert warm.stdout == cold.stdout


def test_a_writing_program_runs_on_the_writer(dobby, shapes):
    """`pt query` of a program that writes goes to Dobby's one writer, not a read-only worker."""
    args = ["query", "codegraph.reject_clear", "-p", "candidate_id=no-such-candidate", "--json"]
    before = served(dobby)
    warm = run_pt("-C", str(shapes), *args, env=dobby.env)
    assert served(dobby) == before  # no worker ran it
    assert json.loads(warm.stdout)["program"] == "codegraph.reject_clear"
    assert warm.stdout == run_pt("-C", str(shapes), *args, env={**dobby.env, "PT_DOBBY": "0"}).stdout


def test_pt_run_fix_and_ingest_through_dobby(dobby, shapes):
    warm = run_pt("-C", str(shapes), "run", "fix", "--seed", "src/report.rs", "--dry-run", "--json", env=dobby.env)
    cold = run_pt("-C", str(shapes), "run", "fix", "--seed", "src/report.rs", "--dry-run", "--json",
                  env={**dobby.env, "PT_DOBBY": "0"})
    w, c = json.loads(warm.stdout), json.loads(cold.stdout)
    assert w["outcome"] == c["outcome"] == "would-fix" and w["diff"] == c["diff"]
    assert "round 0" in warm.stderr  # progress notifications, printed by the client
    lib = shapes / "src" / "geometry.rs"
    lib.write_text(lib.read_text() + "\npub fn dobby_probe() -> u32 { 7 }\n")
    rep = json.loads(run_pt("-C", str(shapes), "ingest", "--json", env=dobby.env).stdout)
    assert rep["files_parsed"] == 1
    found = json.loads(run_pt("-C", str(shapes), "query", "search", "-p", "query=dobby_probe", "--json",
                              env={"PT_DOBBY": "0"}).stdout)
    assert any(r["name"] == "dobby_probe" for r in found["rows"])


def hydrated_facts(db: Path) -> dict:
    """What hydrating writes: nodes' RA signatures and confidence (hydrated or not), every edge
    with its provenance, RA's diagnostics."""
    from parseltongue.adapters.store import open_store

    scripts = {"nodes": "?[id, ra, conf, hydrated] := *isg_nodes{id, ra_signature: ra, confidence: conf, "
                        "ra_hydrated_ts: ts}, hydrated = ts > 0",
               "edges": "?[s, d, k, w, p, e] := *isg_edges{src_id: s, dst_id: d, kind: k, weight: w, provenance: p, "
                        "evidence: e}",
               "diagnostics": "?[id, f, c, m, n] := *diagnostics{id, file_path: f, code: c, message: m, node_id: n, "
                              "source: 'ra'}"}
    store = open_store(db)
    try:
        return {name: sorted(map(repr, store.run(q).rows)) for name, q in scripts.items()}
    finally:
        store.close()


def ra_sessions(dobby) -> dict:
    return {s["root"]: s for w in dobby.call("get_status")["workers"] for s in w.get("ra_sessions", [])}


def test_a_warm_rust_analyzer_serves_hydrate_and_preflight(dobby, tmp_path):
    """A CPU worker opened with `ra` keeps rust-analyzer running for the workspace (and for
    PreFlight's mirror); `pt ingest --hydrate`, `pt hydrate` and `pt run fix` (stage ra on)
    through Dobby use it, start no other, see edits on disk, and give what they give without Dobby."""
    ws = tmp_path / "shapes"
    shutil.copytree(REPO / "examples" / "shapes", ws)
    dbs = {k: str(tmp_path / f"{k}.db") for k in ("warm", "cold")}
    warm_env, cold_env = dobby.env, {**dobby.env, "PT_DOBBY": "0"}
    w = dobby.call("open_worker", {"kind": "cpu", "ra": True, "workspace": str(ws)})
    [session] = w["ra_sessions"]
    assert w["ra"] is True and session["root"] == str(ws.resolve()) and session["starts"] == 1
    assert session["pid"] in [pid for pid, _ in rust_analyzers()]

    def both(*args: str) -> tuple[dict, dict]:
        warm = json.loads(run_pt("-C", str(ws), "--db", dbs["warm"], *args, "--json", env=warm_env).stdout)
        cold = json.loads(run_pt("-C", str(ws), "--db", dbs["cold"], *args, "--json", env=cold_env).stdout)
        return warm, cold

    def same_report(warm: dict, cold: dict) -> None:
        drop = ("elapsed_s", "timings", "rust_analyzer")
        assert {k: v for k, v in warm.items() if k not in drop} == {k: v for k, v in cold.items() if k not in drop}

    warm, cold = both("ingest", "--hydrate")
    assert warm["hydrate"]["files_hydrated"] == cold["hydrate"]["files_hydrated"] == 3
    assert warm["hydrate"]["signatures"] > 0
    same_report(warm["hydrate"], cold["hydrate"])
    assert hydrated_facts(Path(dbs["warm"])) == hydrated_facts(Path(dbs["cold"]))

    # An edit on disk: the warm session is told of it, and no other analyzer starts
    lib = ws / "src" / "geometry.rs"
    lib.write_text(lib.read_text() + "\npub fn warm_probe(n: u32) -> u32 {\n    n + 1\n}\n")
    warm, cold = both("ingest", "--hydrate")
    assert warm["hydrate"]["files_hydrated"] == 1
    same_report(warm["hydrate"], cold["hydrate"])
    facts = hydrated_facts(Path(dbs["warm"]))
    assert any("warm_probe" in n and "pub fn warm_probe(n: u32) -> u32" in n for n in facts["nodes"])
    assert facts == hydrated_facts(Path(dbs["cold"]))
    warm, cold = both("hydrate", "--budget-s", "0")  # nothing changed since: nothing to do, either way
    assert warm["files_pending"] == cold["files_pending"] == 0
    after = ra_sessions(dobby)[str(ws.resolve())]
    assert (after["pid"], after["starts"]) == (session["pid"], 1) and after["reloaded"] >= 1

    # PreFlight's ra stage (off by default) through Dobby: the mirror's warm session, kept
    for db in dbs.values():
        run_pt("-C", str(ws), "--db", db, "query", "preflight.set_policy", "-p", "key=stage_ra", "-p", "value=true",
               env=cold_env)
    for attempt in range(2):
        warm, cold = both("run", "fix", "--seed", "src/report.rs", "--dry-run")
        assert warm["outcome"] == cold["outcome"] == "would-fix" and warm["diff"] == cold["diff"]
        assert not [x for x in warm["warnings"] if "stage ra" in x], warm["warnings"]
        mirrors = {root: s for root, s in ra_sessions(dobby).items() if root != str(ws.resolve())}
        [(root, mirror)] = mirrors.items()
        if attempt == 0:
            first = mirror
        assert (mirror["pid"], mirror["starts"]) == (first["pid"], 1)
    from parseltongue.adapters.store import open_store

    stage_rows = {}
    for k, db in dbs.items():  # stage ra's verdicts, stored by each PreFlight
        store = open_store(db)
        try:
            stage_rows[k] = sorted(map(repr, store.run("?[c, p, e] := *preflight_results{candidate_id: c, stage: 'ra', "
                                                       "passed: p, new_errors: e}, not starts_with(c, 'baseline')").rows))
        finally:
            store.close()
    assert stage_rows["warm"] and stage_rows["warm"] == stage_rows["cold"]


def test_embed_and_completion_with_the_local_model(dobby):
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python is not installed: CI installs the `local` extra")
        pytest.skip("llama-cpp-python is not installed (the `local` extra)")
    ensured = dobby.call("ensure_model", {"name": MODEL})
    assert ensured["model"] == MODEL and len(ensured["sha256"]) == 64
    emb = dobby.call("embed", {"texts": ["pub fn area(&self) -> f64", "struct Circle", "pub fn area(&self) -> f64"]})
    v = emb["vectors"]
    assert emb["dim"] == 640 and len(v) == 3 and all(len(x) == 640 for x in v)
    assert abs(sum(x * x for x in v[0]) - 1.0) < 1e-4
    assert v[0] == v[2] and v[0] != v[1]
    a = dobby.call("completion", {"prompt": "fn main() {\n    println!(", "max_tokens": 12})
    b = dobby.call("completion", {"prompt": "fn main() {\n    println!(", "max_tokens": 12})
    assert a["text"].strip() and a == b
    assert a["usage"]["prompt_tokens"] > 0 and 0 < a["usage"]["completion_tokens"] <= 12
    ver = dobby.call("verify_default", {"lines": 5})
    assert ver["ok"] and len(ver["lines"]) == 5, ver
    ver = json.loads(run_pt("dobby", "verify", "--lines", "3", env=dobby.env).stdout)
    assert ver["ok"] and len(ver["lines"]) == 3, ver
    st = dobby.call("get_status")
    assert [w["model"] for w in st["workers"] if w["kind"] == "llm"] == [MODEL]
    with pytest.raises(client.DobbyError) as e:  # one LLM worker: another model must wait for it to close
        dobby.call("open_worker", {"kind": "llm", "model": "other-model"})
    assert e.value.code in (-32021, -32040)


def test_summarize_and_embed_through_dobby_equal_the_in_process_rows(dobby, shapes, tmp_path):
    """`pt summarize` and `pt models embed` through Dobby (its model worker answers, its writer
    stores) write the rows the in-process commands write, row for row."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python is not installed: CI installs the `local` extra")
        pytest.skip("llama-cpp-python is not installed (the `local` extra)")
    from parseltongue.adapters.store import open_store

    dobby.call("ensure_model", {"name": MODEL})
    dbs = {k: str(tmp_path / f"{k}.db") for k in ("warm", "cold")}
    for k, db in dbs.items():
        run_pt("-C", str(shapes), "--db", db, "ingest", env={"PT_DOBBY": "0"})

    def llm_served() -> int:
        return sum(w["served"] for w in dobby.call("get_status")["workers"] if w["kind"] == "llm")

    for args in (["summarize", "src/geometry.rs", "--json"], ["models", "embed", "--batch", "8", "--json"]):
        before = llm_served()
        warm = json.loads(run_pt("-C", str(shapes), "--db", dbs["warm"], *args, env=dobby.env).stdout)
        assert llm_served() > before, args  # the pool's model worker did it
        cold = json.loads(run_pt("-C", str(shapes), "--db", dbs["cold"], *args,
                                 env={**dobby.env, "PT_DOBBY": "0"}).stdout)
        drop = ("seconds", "nodes_per_s")
        assert {k: v for k, v in warm.items() if k not in drop} == {k: v for k, v in cold.items() if k not in drop}
    scripts = {"summaries": "?[id, m, h, s, st, raw] := *node_summaries{id, model: m, hash: h, summary: s, "
                            "status: st, raw}",
               "vectors": "?[id, m, d, v, h] := *embeddings{id, model: m, dim: d, vec: v, hash: h}"}
    rows = {}
    for k, db in dbs.items():
        store = open_store(db)
        try:
            rows[k] = {name: sorted(map(repr, store.run(q).rows)) for name, q in scripts.items()}
        finally:
            store.close()
    assert len(rows["cold"]["summaries"]) >= 3 and len(rows["cold"]["vectors"]) >= 8
    assert rows["warm"] == rows["cold"]


def test_bad_params_get_errors_and_the_daemon_lives(dobby):
    for method, params in (("embed", {"texts": "not a list"}), ("run_task", {"agent": 5}),
                           ("open_worker", {"kind": "gpu"}), ("close_worker", {"id": "nope"})):
        with pytest.raises(client.DobbyError) as e:
            dobby.call(method, params)
        assert e.value.code == -32602, (method, e.value.message)
    assert dobby.call("ping")["pong"] is True


def test_two_clients_at_once(dobby, shapes):
    results: dict = {}

    def go(key, method, params):
        try:
            results[key] = dobby.call(method, params)
        except client.DobbyError as exc:
            results[key] = exc

    a2 = {"agent": "A2", "payload": {"workspace": str(shapes), "seeds": [SEED]}}
    threads = [threading.Thread(target=go, args=(k, m, p)) for k, m, p in
               (("a", "run_task", a2), ("b", "run_task", a2), ("c", "ping", {}), ("d", "get_status", {}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results["a"]["rows"] == results["b"]["rows"] and results["c"]["pong"] is True
    assert "workers" in results["d"]


def test_a_worker_killed_mid_task_gives_an_error_or_a_retry(dobby, shapes, tmp_path):
    """A1 (a cargo check) on a fresh copy; its worker is SIGKILLed while it runs. The client gets
    the retried answer or an error, promptly; Dobby keeps serving."""
    for attempt in range(3):
        ws = tmp_path / f"copy{attempt}"
        shutil.copytree(shapes, ws, ignore=shutil.ignore_patterns("target"))
        box: dict = {}

        def go():
            try:
                box["r"] = dobby.call("run_task", {"agent": "A1", "payload": {"workspace": str(ws)}}, timeout=240)
            except client.DobbyError as exc:
                box["r"] = exc

        t = threading.Thread(target=go)
        t.start()
        victim = None
        while t.is_alive() and victim is None:
            busy = [w for w in dobby.call("get_status")["workers"] if w["kind"] == "cpu" and w["inflight"]]
            victim = busy[0]["pid"] if busy else None
            time.sleep(0.01)
        if victim is None:
            continue  # it finished before we saw it run: try again on a colder copy
        os.kill(victim, signal.SIGKILL)
        t.join(240)
        assert not t.is_alive(), "the client hung on a killed worker"
        r = box["r"]
        if isinstance(r, client.DobbyError):
            assert r.code == -32030 and "died" in r.message
        else:
            assert r["agent"] == "A1" and r["success"] is False
        st = dobby.call("get_status")
        assert victim not in [w["pid"] for w in st["workers"]]
        return
    pytest.fail("never caught the worker busy")


def test_shutdown_drains_running_requests_and_leaves_no_ray_process(dobby, shapes, tmp_path):
    ws = tmp_path / "cold"
    shutil.copytree(shapes, ws, ignore=shutil.ignore_patterns("target"))  # a cold cargo check: it takes a while
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(r=dobby.call(
        "run_task", {"agent": "A1", "payload": {"workspace": str(ws)}}, timeout=240)))
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(w["inflight"] for w in dobby.call("get_status")["workers"]):
        time.sleep(0.01)
    ack = dobby.call("shutdown", {"graceful_timeout": 120})
    assert ack["stopping"] is True and ack["inflight"] >= 1, ack
    with pytest.raises(client.DobbyError) as e:  # nothing new is taken while draining
        dobby.call("run_task", {"agent": "A2", "payload": {"workspace": str(shapes), "seeds": [SEED]}})
    assert e.value.code == -32050
    t.join(240)
    assert box["r"]["agent"] == "A1" and box["r"]["success"] is False  # answered, not cut off
    dobby.proc.wait(120)
    deadline = time.monotonic() + 30
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_processes() == []
    assert rust_analyzers() == []  # the warm sessions stopped with their worker
    assert not os.path.exists(dobby.sock)


# ------------------------------------------------------------------ a two-node Ray cluster

@pytest.fixture(scope="module")
def two_nodes():
    """Two Ray nodes on this machine (in this namespace), for the rest of the file; stopped by
    their pids, they must take every process they started with them."""
    from parseltongue.adapters.ray_runtime import local_cluster

    with local_cluster(nodes=2, cpus_per_node=1, port=6380) as cluster:
        yield cluster
    deadline = time.monotonic() + 30
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_processes() == []


def test_ingest_on_a_two_node_ray_cluster_equals_a_local_ingest(two_nodes, tmp_path):
    from test_ingest import fact_rows

    from parseltongue.adapters.store import open_store

    cluster = two_nodes
    ws = tmp_path / "ws"
    shutil.copytree(REPO / "tests" / "fixtures" / "ingest_ws", ws)
    r = run_pt("-C", str(ws), "--db", str(tmp_path / "ray.db"), "ingest", "--ray-address", cluster["address"],
               "--json", env={"PT_DOBBY": "0", **cluster["env"]})
    assert json.loads(r.stdout)["files_parsed"] > 0
    assert "2 nodes" in r.stderr
    # A Dobby joined to the cluster parses its ingests there too, and leaves the cluster up
    home = tmp_path / "home"
    home.mkdir()
    d = Daemon(home, "--ray-address", cluster["address"], env=cluster["env"])
    try:
        d.wait_ready()
        st = d.call("get_status")
        assert st["ray"]["owned"] is False and st["ray"]["nodes"] == 2
        rep = json.loads(run_pt("-C", str(ws), "--db", str(tmp_path / "dobby.db"), "ingest", "--json", env=d.env).stdout)
        assert rep["files_parsed"] > 0
        d.call("shutdown", {"graceful_timeout": 30})
        d.proc.wait(120)
    finally:
        d.stop()
    assert len([pid for pid, cmd in ray_processes() if "/raylet/raylet " in cmd]) == 2  # the cluster outlives Dobby
    run_pt("-C", str(ws), "--db", str(tmp_path / "local.db"), "ingest", env={"PT_DOBBY": "0"})
    stores = {k: open_store(tmp_path / f"{k}.db") for k in ("ray", "dobby", "local")}
    try:
        rows = {k: fact_rows(s) for k, s in stores.items()}
        assert sum(len(v) for v in rows["local"].values()) > 20
        for rel in rows["local"]:
            assert rows["ray"][rel] == rows["local"][rel], rel
            assert rows["dobby"][rel] == rows["local"][rel], rel
    finally:
        for s in stores.values():
            s.close()


@pytest.fixture(scope="module")
def model_registry(home) -> Path:
    """The packaged model in a registry every process of these tests shares."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python is not installed: CI installs the `local` extra")
        pytest.skip("llama-cpp-python is not installed (the `local` extra)")
    reg = home / "registry"
    run_pt("models", "ensure", MODEL, "--no-install", env={"MODEL_REGISTRY": str(reg)})
    return reg


MODEL_ROWS = {"summaries": "?[id, m, h, s, st, raw] := *node_summaries{id, model: m, hash: h, summary: s, "
                           "status: st, raw}",
              "vectors": "?[id, m, d, v, h] := *embeddings{id, model: m, dim: d, vec: v, hash: h}"}
# src/report.rs has two leaf fns: one summary for each node (generation is the slow part)
MODEL_RUNS = (["summarize", "src/report.rs", "--json"], ["models", "embed", "--batch", "8", "--json"])


def model_rows(db: Path) -> dict:
    from parseltongue.adapters.store import open_store

    store = open_store(db)
    try:
        return {name: sorted(map(repr, store.run(q).rows)) for name, q in MODEL_ROWS.items()}
    finally:
        store.close()


def same_model_report(a: dict, b: dict) -> None:
    drop = ("seconds", "nodes_per_s")
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


@pytest.fixture(scope="module")
def model_reference(model_registry, tmp_path_factory) -> tuple[Path, list[dict], dict]:
    """The reference: `pt summarize` and `pt models embed` in-process, no Ray, no Dobby, on a copy
    of shapes: (the workspace, their reports, the rows they wrote)."""
    ws = tmp_path_factory.mktemp("models") / "shapes"
    shutil.copytree(REPO / "examples" / "shapes", ws)
    db = ws.parent / "local.db"
    run_pt("-C", str(ws), "--db", str(db), "ingest", env={"PT_DOBBY": "0"})
    reports = [json.loads(run_pt("-C", str(ws), "--db", str(db), *args,
                                 env={"PT_DOBBY": "0", "MODEL_REGISTRY": str(model_registry)}).stdout)
               for args in MODEL_RUNS]
    rows = model_rows(db)
    assert len(rows["summaries"]) == 2 and len(rows["vectors"]) >= 8
    return ws, reports, rows


def test_summarize_and_embed_with_ray_address_spread_over_both_nodes(two_nodes, model_registry, model_reference,
                                                                    tmp_path):
    """`pt summarize --ray-address` and `pt models embed --ray-address` without Dobby: one model
    worker on each node answers part of every batch; the rows equal the local run's."""
    ws, local, local_rows = model_reference
    db = tmp_path / "ray.db"
    run_pt("-C", str(ws), "--db", str(db), "ingest", env={"PT_DOBBY": "0"})
    env = {"PT_DOBBY": "0", "MODEL_REGISTRY": str(model_registry), **two_nodes["env"]}
    for args, ref in zip(MODEL_RUNS, local):
        r = run_pt("-C", str(ws), "--db", str(db), *args, "--ray-address", two_nodes["address"], env=env)
        same_model_report(json.loads(r.stdout), ref)
        assert "on the Ray cluster at" in r.stderr and "2 nodes" in r.stderr
        [per_node] = [line for line in r.stderr.splitlines() if line.startswith("pt: items per node: ")]
        counts = [int(part.split()[-1]) for part in per_node.split(": ", 2)[2].split(", ")]
        assert len(counts) == 2 and all(n > 0 for n in counts), per_node  # both nodes answered
    assert model_rows(db) == local_rows


def test_dobby_on_a_cluster_spreads_model_batches_over_both_nodes(two_nodes, model_registry, model_reference,
                                                                  tmp_path):
    """Pools.llm_map on two nodes: a Dobby joined to the cluster runs `pt summarize` and `pt
    models embed` batches on an LLM worker on each node; the rows equal the local run's."""
    ws, local, local_rows = model_reference
    db = tmp_path / "dobby.db"
    run_pt("-C", str(ws), "--db", str(db), "ingest", env={"PT_DOBBY": "0"})
    home = tmp_path / "home"
    home.mkdir()
    d = Daemon(home, "--ray-address", two_nodes["address"], env={**two_nodes["env"], "MODEL_REGISTRY": str(model_registry)})
    try:
        d.wait_ready()
        for args, ref in zip(MODEL_RUNS, local):
            same_model_report(json.loads(run_pt("-C", str(ws), "--db", str(db), *args, env=d.env).stdout), ref)
        llms = [w for w in d.call("get_status")["workers"] if w["kind"] == "llm"]
        assert len(llms) == 2 and len({w["node"] for w in llms}) == 2, llms  # one on each node
        assert all(w["served"] > 0 for w in llms), llms  # both answered batches
        d.call("shutdown", {"graceful_timeout": 30})
        d.proc.wait(120)
    finally:
        d.stop()
    assert model_rows(db) == local_rows
