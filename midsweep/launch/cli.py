"""The ``midsweep`` command: ``midsweep status SWEEP_DIR`` (SWEEP_DIR = the sweep's train.out_dir)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from midsweep.launch import status


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="midsweep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="state of every run of a sweep directory (run dirs + manifest + SLURM)")
    st.add_argument("sweep_dir", type=Path, help="the sweep directory (train.out_dir), holding the run directories")
    st.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    st.add_argument("--state", choices=status.STATES, help="only runs in this state")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a directory; give the sweep's train.out_dir")
    rows = status.collect(args.sweep_dir)
    if args.state:
        rows = [r for r in rows if r.state == args.state]
    if args.json:
        for row in status.as_dicts(rows):
            print(json.dumps(row))
    else:
        print(status.table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
