#!/usr/bin/env bash
# The main job on the bundled example workspace (examples/shapes, one deliberate compile error).
# Runs on a scratch copy so the example in the checkout stays broken for the next demo.
set -euo pipefail
cd "$(dirname "$0")/.."
pt=.venv/bin/pt
work=$(mktemp -d "${TMPDIR:-/tmp}/pt-demo.XXXXXX")
cp -r examples/shapes "$work/"
ws="$work/shapes"
echo "== workspace: $ws" >&2
$pt -C "$ws" doctor || true
$pt -C "$ws" init
$pt -C "$ws" status
echo "== done (scratch copy left in $ws)" >&2
