#!/usr/bin/env bash
# The main job on the bundled example workspace (examples/shapes, one deliberate compile error).
# Runs on a scratch copy so the example in the checkout stays as it is for the next demo.
# `pt run fix` is not built yet (issue 7): the demo builds the interface graph and queries it.
set -euo pipefail
cd "$(dirname "$0")/.."
pt=.venv/bin/pt
work=$(mktemp -d "${TMPDIR:-/tmp}/pt-demo.XXXXXX")
cp -r examples/shapes "$work/"
ws="$work/shapes"
echo "== workspace: $ws" >&2
$pt -C "$ws" doctor || true
$pt -C "$ws" init
$pt -C "$ws" ingest
echo "== graph size" >&2
$pt -C "$ws" query counts
echo "== the node under byte 200 of src/report.rs (where the compile error is)" >&2
$pt -C "$ws" query node_at -p file=src/report.rs -p byte=200
echo "== call sites no edge explains (external or ambiguous names)" >&2
$pt -C "$ws" query unresolved_calls -p file=src/report.rs
$pt -C "$ws" status
echo "== done (scratch copy left in $ws)" >&2
