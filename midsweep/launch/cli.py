"""midsweep: follow a sweep (status), remove shared-prefix checkpoints it no longer needs (gc), tokenize its
data ahead of training (prepare), export a run to transformers (export) and evaluate a run's checkpoints with
lm-evaluation-harness (evaluate). SWEEP_DIR is a sweep's train.out_dir; RUN_DIR one of its run directories."""
from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

from midsweep.version import version_line
from midsweep.launch import prepare, status, status_table


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="midsweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="state of every run of a sweep directory (run dirs + manifest + SLURM)",
                        description=_plain(status.__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_argument("sweep_dir", type=Path, help="the sweep directory (train.out_dir), holding the run directories")
    st.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    st.add_argument("--state", choices=status.STATES, help="only runs in this state")
    st.add_argument("--wide", action="store_true",
                    help="every column (also those constant across the runs shown), whole keys, uncut lines")
    st.add_argument("--watch", type=float, nargs="?", const=30.0, metavar="SECONDS",
                    help="refresh every SECONDS (default 30) until every run is done, failed or interrupted "
                    "(Ctrl-C stops)")
    gc = sub.add_parser("gc", help="remove the shared-prefix checkpoints (SWEEP_DIR/_prefixes) no pending run needs",
                        description=_plain(_gc.__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    gc.add_argument("sweep_dir", type=Path, help="the sweep directory (train.out_dir)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    gc.set_defaults(handler=_gc)
    _add_export_commands(sub)
    prepare.add_arguments(sub.add_parser(
        "prepare", help="tokenize every domain of a config into the shard cache, in parallel (before training)",
        description=prepare.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    if "handler" in args:  # export, evaluate, prepare
        return args.handler(args)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a directory; give the sweep's train.out_dir")
    while True:
        rows = status.collect(args.sweep_dir)
        shown = [r for r in rows if r.state == args.state] if args.state else rows
        if args.watch and not args.json and sys.stdout.isatty():
            print("\033[H\033[J", end="")  # clear the terminal
        if args.json:
            for row in status.as_dicts(shown):
                print(json.dumps(row))
        else:
            width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
            print(status_table.table(shown, wide=args.wide, width=width))
        unusable = status.problems(args.sweep_dir, rows)
        if unusable:
            print(f"{len(unusable)} file(s) could not be used (the runs are shown from the rest):",
                  file=sys.stderr if args.json else sys.stdout)
            for problem in unusable:
                print(f"  - {problem}", file=sys.stderr if args.json else sys.stdout)
        if not args.watch or all(r.state in ("done", "failed", "interrupted") for r in rows):
            return 0
        if not args.json:
            print(f"[{time.strftime('%H:%M:%S')}] refreshing every {args.watch:g}s; Ctrl-C stops", flush=True)
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def _plain(doc: str) -> str:
    """A module docstring as --help text: without its reStructuredText literal quotes."""
    return inspect.cleandoc(doc).replace("``", "")


def _gc(args: argparse.Namespace) -> int:
    """Remove the shared-prefix checkpoints (SWEEP_DIR/_prefixes, docs/sharing.md) that no run of the sweep's
    manifest which is not done yet forks from; keep the rest. --dry-run lists them and removes nothing."""
    from midsweep.launch import manifest, sharing

    if not args.sweep_dir.is_dir():
        sys.exit(f"midsweep gc: {args.sweep_dir} is not a directory; give the sweep's train.out_dir")
    removed = sharing.gc(args.sweep_dir, manifest.read(args.sweep_dir)["runs"], dry_run=args.dry_run)
    for path in removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {path}")
    print(f"{len(removed)} prefix entr{'y' if len(removed) == 1 else 'ies'} and claims "
          f"{'to remove' if args.dry_run else 'removed'}")
    return 0


def _add_export_commands(sub) -> None:
    from midsweep import downstream, export

    ex = sub.add_parser("export", help="write a run's checkpoint as a transformers model directory",
                        description=export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("run_dir", type=Path, help="the run directory (train.out_dir/<run_id>)")
    ex.add_argument("out_dir", type=Path, help="where to write config.json, the weights and the tokenizer")
    ex.add_argument("--step", type=int, help="checkpoint step (default: the newest complete checkpoint)")
    ex.set_defaults(handler=_export)
    downstream.add_arguments(sub.add_parser(
        "evaluate", help="lm-evaluation-harness tasks on a run's checkpoints, appended to its downstream.jsonl",
        description=downstream.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))


def _export(args: argparse.Namespace) -> int:
    from midsweep.export import ExportError, export

    try:
        done = export(args.run_dir, args.out_dir, args.step)
    except ExportError as err:
        sys.exit(f"midsweep export: {err}")
    print(f"exported step {done.step} ({done.tokens} tokens) of {args.run_dir} to {done.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
