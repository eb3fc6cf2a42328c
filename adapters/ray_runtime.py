"""The one module that starts, joins and leaves Ray (PyPI `ray`, extra `dobby`).

    from parseltongue.adapters import ray_runtime as R
    R.connect(None)                 # a private single-node runtime on 127.0.0.1, owned by this process
    R.connect("127.0.0.1:6380")     # join a cluster started with `ray start --head ...`
    refs = R.map_batches(fn, batches)   # fn(batch) on the cluster, results in order
    R.disconnect()                  # stops the processes this process started; a joined cluster stays

Loopback only. On hosts like the ones this project is built on, Ray by default binds to and
connects through the host's first non-loopback address and probes an outside address to learn
it. A runtime that pt starts therefore names 127.0.0.1 as its node address, disables usage stats
and the dashboard; tests, benchmarks and CI in addition start it only inside a network namespace
that has nothing but loopback (`unshare -n`, see docs/dobby.md). Joining a real multi-machine
cluster is the user's choice of address.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

LOOPBACK = "127.0.0.1"


class RayUnavailable(Exception):
    """Ray is not installed, or the runtime cannot be started or reached; says why."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("Ray is not installed (pip install 'parseltongue[dobby]')") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> dict:
    """Start a private runtime (address None) or join `address`. Returns what was done:
    {"address", "owned": bool, "nodes": n}."""
    # Before the import: Ray reads these when it starts its processes.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    # No worker process started ahead of need: Dobby opens its own workers (an idle one held ~80 MB)
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    ray = _ray()
    if ray.is_initialized():
        return {"address": address or "local", "owned": address is None, "nodes": len(ray.nodes())}
    kwargs: dict[str, Any] = dict(configure_logging=False, log_to_driver=False, namespace="parseltongue")
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # "local": always a new runtime. Without it ray.init joins whatever cluster a
            # `ray start` on this machine last recorded in /tmp/ray.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
        raise RayUnavailable(f"cannot start or reach {where}: {first}") from None
    return {"address": address or "local", "owned": address is None,
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive"))}


def disconnect() -> None:
    """Leave the runtime; a private one is stopped with every process it started."""
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


def cluster_cpus() -> int:
    ray = _ray()
    return int(ray.cluster_resources().get("CPU", 0))


def alive_nodes() -> int:
    ray = _ray()
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def map_batches(fn: Callable[[Any], Any], batches: Iterable[Any], window: int | None = None) -> Iterator[Any]:
    """fn(batch) as Ray tasks over the cluster, yielded in input order; at most `window` batches
    in flight (default twice the cluster's CPUs) so results are consumed as they come."""
    ray = _ray()
    remote = ray.remote(num_cpus=1, max_retries=2)(fn)
    window = window or max(2, 2 * cluster_cpus())
    pending: list = []
    for batch in batches:
        pending.append(remote.remote(batch))
        if len(pending) >= window:
            yield ray.get(pending.pop(0))
    while pending:
        yield ray.get(pending.pop(0))


def wait_nodes(n: int, timeout: float = 120.0) -> int:
    """Block until the connected cluster has `n` live nodes (or the timeout); returns the count."""
    import time

    deadline = time.monotonic() + timeout
    while (alive := alive_nodes()) < n and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive


@contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 1, port: int = 6380) -> Iterator[dict]:
    """A cluster of `nodes` Ray nodes on this machine at 127.0.0.1:`port` (benchmarks and tests
    run it inside a loopback-only network namespace). Each node is a `ray start --block`
    process of ours; stopping it (SIGTERM, by its pid) stops every process it started. Yields
    {"address", "env"}: `env` holds the token the nodes share, which clients need too."""
    import secrets
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time

    exe = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if exe is None:
        raise RayUnavailable("the `ray` command is not installed (pip install 'parseltongue[dobby]')")
    # Ray 2.60 nodes authenticate one another with a token (~/.ray/auth_token otherwise).
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    full = {**os.environ, **env}
    common = [f"--num-cpus={cpus_per_node}", f"--node-ip-address={LOOPBACK}", "--block"]
    procs = [subprocess.Popen([exe, "start", "--head", f"--port={port}", "--include-dashboard=false",
                               "--disable-usage-stats", *common], env=full,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 120
        while True:  # the head's GCS listens: the other nodes can join
            with socket.socket() as s:
                if s.connect_ex((LOOPBACK, port)) == 0:
                    break
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RayUnavailable(f"the Ray head on {LOOPBACK}:{port} did not start")
            time.sleep(0.2)
        for _ in range(nodes - 1):
            procs.append(subprocess.Popen([exe, "start", f"--address={LOOPBACK}:{port}", *common], env=full,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # Every node joined before the caller uses them (asked from a child: this process stays Ray-free)
        probe = (f"from parseltongue.adapters import ray_runtime as R; R.connect('{LOOPBACK}:{port}'); "
                 f"print(R.wait_nodes({nodes})); R.disconnect()")
        out = subprocess.run([sys.executable, "-c", probe], env=full, capture_output=True, text=True, timeout=300)
        joined = int(out.stdout.split()[-1]) if out.returncode == 0 and out.stdout.split() else 0
        if joined < nodes:
            raise RayUnavailable(f"only {joined} of {nodes} Ray nodes joined: {out.stderr.strip()[-300:]}")
        yield {"address": f"{LOOPBACK}:{port}", "env": env}
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
