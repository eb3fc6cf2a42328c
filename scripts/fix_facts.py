"""Print the fix_* facts of a broken workspace as the `facts:` block of a golden case.

    .venv/bin/python scripts/fix_facts.py WORKSPACE SEED_FILE > /tmp/facts.yaml

Runs the real seed check (`cargo check` in pt's mirror) exactly as `pt run fix` round 0 does and
stores the facts under run_id "g", so pattern golden cases hold what rustc really says.
"""
import sys

import yaml

from parseltongue.runner.api import Pt
from parseltongue.runner.fix import seed_facts


def main(ws: str, seed: str) -> None:
    with Pt.open(ws) as pt:
        seed_facts(pt, seed, "g")
        out = {}
        for rel in ("fix_diag", "fix_span", "fix_file"):
            cols = {"fix_diag": "run_id, round, diag, file_path, code, severity, message, start, end, line, col, node_id, text",
                    "fix_span": "run_id, round, diag, seq, part, level, message, file_path, start, end, line, is_primary, label, text, has_replacement, replacement, applicability",
                    "fix_file": "run_id, round, file_path, text"}[rel]
            r = pt.store.run(f"?[{cols}] := *{rel}{{{cols}}}, run_id = 'g'", immutable=True)
            out[rel] = [dict(zip(r.headers, row)) for row in r.rows]
        yaml.safe_dump({"facts": out}, sys.stdout, sort_keys=False, allow_unicode=True, width=200)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
