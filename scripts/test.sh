#!/usr/bin/env bash
# The whole test suite: pytest (unit, CLI, golden on both engines, real cargo/tree-sitter/rust-analyzer).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q "$@"
