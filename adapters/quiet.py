"""Native libraries that write to fd 2 behind Python's back (llama.cpp's logs, the Rust panic
hook of cozo-embedded): `quiet_stderr()` sends it to /dev/null for a short call, so pt's stderr
stays pt's one-line messages. Not for long calls on a thread: it silences the whole process."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture, notebooks
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
