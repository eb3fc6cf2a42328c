#!/usr/bin/env bash
# Set up pt in ./.venv from a clean clone. `--dev` adds the test tools and what the tests drive:
# the rust-analyzer package (the `ra` extra). Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: $1 is required: $2" >&2; exit 2; }; }
need python3 "install Python 3.10+"
need cargo "install a Rust toolchain with rustup (https://rustup.rs)"

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
extras="ra"
[ "$dev" = 1 ] && extras="ra,dev"
stamp=".venv/.pt-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" >&2
  touch "$stamp"
fi
echo "setup: pt is ready in $(pwd)/.venv (extras: $extras)" >&2
