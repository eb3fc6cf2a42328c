"""Where Dobby lives and how it is told things: the environment and its defaults.

    PARSELTONGUE_HOME   pt's home for shared state (default ~/.cache/parseltongue)
    SOCKET_PATH         Dobby's Unix socket (default $PARSELTONGUE_HOME/dobby.sock)
    MODEL_REGISTRY      the model registry directory (adapters/models.py)
    PT_DOBBY=0          the CLI never uses a running Dobby (always in-process)
    PT_MEM_AVAILABLE_MB     the free memory the memory guard sees (adapters/models.py; tests inject one)
"""
from __future__ import annotations

import os
from pathlib import Path

MAX_CPU_WORKERS = 5  # the design's cap on light CPU workers
CPU_WORKER_MB = 300  # what one CPU worker may take: a Ray worker (~100 MB) + an open graph + a query
RA_SESSION_MB = 600  # what a warm rust-analyzer may add (450-550 MB RSS measured on 1.4M lines)


def home() -> Path:
    env = os.environ.get("PARSELTONGUE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "parseltongue"


def socket_path(explicit: str | None = None) -> str:
    return str(Path(explicit or os.environ.get("SOCKET_PATH") or home() / "dobby.sock").expanduser())


def use_dobby() -> bool:
    return os.environ.get("PT_DOBBY", "1").strip().lower() not in ("0", "false", "no", "off")
