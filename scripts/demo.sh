#!/usr/bin/env bash
# The main job on the bundled example workspace (examples/shapes, one deliberate compile error:
# `HashMap` used without its import). Runs on a scratch copy so the example in the checkout stays
# broken for the next demo.
set -euo pipefail
cd "$(dirname "$0")/.."
pt=.venv/bin/pt
work=$(mktemp -d "${TMPDIR:-/tmp}/pt-demo.XXXXXX")
cp -r examples/shapes "$work/"
ws="$work/shapes"
cd "$ws"
echo "== workspace: $ws" >&2
echo "== cargo check fails:" >&2
cargo check -q 2>&1 | grep -E '^error' | head -5 >&2 || true
echo "== pt run fix --seed src/report.rs --yes" >&2
"$OLDPWD/$pt" run fix --seed src/report.rs --yes
echo "== cargo check now:" >&2
cargo check -q && echo "cargo check: ok" >&2
echo "== what pt recorded:" >&2
"$OLDPWD/$pt" query fix_report
echo "== pt undo puts the file back:" >&2
"$OLDPWD/$pt" undo
echo "== done (scratch copy left in $ws)" >&2
