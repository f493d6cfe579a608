"""``fer-pipeline runs list|compare``: recorded runs from the run index, side by side.

fer-pipeline runs list [--index PATH]
fer-pipeline runs compare [-n 2 | --run RUN_ID...] [--index PATH] [--all-params] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import ConfigError
from fer_pipeline.runs.index import DEFAULT_INDEX, RUNS_ENV, RunIndex, RunIndexError, default_index
from fer_pipeline.runs.record import SUMMARY_METRICS

LOWER_IS_BETTER = {"log_loss"}
DEFAULT_LAST = 2  # runs compare's -n


def differing_params(records: Sequence[dict]) -> list[str]:
    """Parameter names whose value is not the same in every record (missing counts as a value)."""
    names = sorted({key for r in records for key in (r.get("params") or {})})
    marker = object()
    return [
        name
        for name in names
        if len({json.dumps((r.get("params") or {}).get(name, marker), default=repr, sort_keys=True) for r in records})
        > 1
    ]


def compare_table(records: Sequence[dict], *, all_params: bool = False) -> str:
    """Runs side by side, one column each: parameters that differ, metrics, per-class F1, duration.

    The best value of each metric row is marked with ``*`` (the lowest for log loss).
    """
    if not records:
        return "No runs recorded yet."
    header = ["", *[f"#{i + 1} {r.get('run_id', '?')}" for i, r in enumerate(records)]]
    rows: list[list[str] | str] = [header]
    rows.append(["started", *[_short_time(r.get("started") or r.get("finished")) for r in records]])
    rows.append(["duration", *[_duration(r.get("duration_s")) for r in records]])
    rows.append(["training time", *[_duration(r.get("train_seconds")) for r in records]])
    rows.append(["epochs (frozen+finetune)", *[_epochs(r) for r in records]])

    all_params = all_params or len(records) == 1  # one run: nothing to differ from
    names = sorted({k for r in records for k in (r.get("params") or {})}) if all_params else differing_params(records)
    total = len({k for r in records for k in (r.get("params") or {})})
    if all_params:
        rows.append(f"parameters ({total})")
    elif names:
        rows.append(f"parameters that differ ({len(names)} of {total}; --all-params shows all)")
    else:
        rows.append(f"parameters: all {total} the same")
    for name in names:
        rows.append([name, *[_param((r.get("params") or {}).get(name, "-")) for r in records]])

    rows.append("test metrics (* best)")
    for key, label in SUMMARY_METRICS:
        values = [(r.get("metrics") or {}).get(key) for r in records]
        if all(v is None for v in values):
            continue
        rows.append([label, *_marked(values, lower_is_better=key in LOWER_IS_BETTER)])
    rows.append("per-class F1 (* best)")
    for name in CLASSES:
        values = [((r.get("metrics") or {}).get("per_class_f1") or {}).get(name) for r in records]
        rows.append([name, *_marked(values)])
    return _render(rows, len(header))


def _marked(values: list, *, lower_is_better: bool = False) -> list[str]:
    numbers = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    best = (min(numbers) if lower_is_better else max(numbers)) if len(set(numbers)) > 1 else None  # no mark on a tie
    return ["n/a" if v is None else f"{v:.4f}{' *' if best is not None and v == best else '  '}" for v in values]


def _render(rows: list, columns: int) -> str:
    table_rows = [r for r in rows if isinstance(r, list)]
    widths = [max(len(str(r[i])) for r in table_rows) for i in range(columns)]
    lines = []
    for row in rows:
        if isinstance(row, str):
            lines.append(f"-- {row} --")
        else:
            lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m {seconds % 60:02d}s"


def _short_time(stamp: Any) -> str:
    if not stamp:
        return "-"
    try:
        return datetime.fromisoformat(str(stamp)).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(stamp)


def _epochs(record: dict) -> str:
    phases = record.get("phases") or {}
    counts = [str((phases.get(p) or {}).get("epochs_run", "-")) for p in ("frozen", "finetune")]
    return "+".join(counts)


# ------------------------------------------------------------------ CLI
def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """``runs list`` and ``runs compare`` for the main CLI."""
    runs = subparsers.add_parser("runs", help="List and compare recorded runs (parameters, metrics, duration).")
    sub = runs.add_subparsers(dest="runs_command", metavar="{list,compare}", required=True)

    listing = sub.add_parser("list", help="One line per recorded run, oldest first.")
    _index_option(listing)
    listing.set_defaults(func=cmd_runs_list)

    compare = sub.add_parser("compare", help="The last N runs side by side: parameters that differ, metrics, duration.")
    compare.add_argument(
        "-n",
        "--last",
        type=int,
        default=None,
        help=f"how many of the latest runs (default {DEFAULT_LAST}; 0 = all of them)",
    )
    compare.add_argument(
        "--run", action="append", default=[], metavar="RUN_ID", help="compare these runs instead (not with -n)"
    )
    compare.add_argument("--all-params", action="store_true", help="show every parameter, not only those that differ")
    compare.add_argument("--json", action="store_true", help="print the records as JSON")
    _index_option(compare)
    compare.set_defaults(func=cmd_runs_compare)


def _index_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index",
        type=Path,
        default=None,
        help=f"run index file (default: ${RUNS_ENV} or {DEFAULT_INDEX}; make run-local writes build/local/runs.json)",
    )


def _index(args: argparse.Namespace) -> RunIndex:
    """The index to read. One named with --index must exist (a typo would read as "no runs");
    the default one may not yet, before the first recorded run."""
    if args.index is not None and not args.index.exists():
        raise RunIndexError(
            f"--index {args.index} does not exist; `fer-pipeline run` records runs in --runs-index, ${RUNS_ENV} "
            f"or {DEFAULT_INDEX}, and `make run-local` in build/local/runs.json: pass one of those."
        )
    return RunIndex(args.index if args.index is not None else default_index())


def cmd_runs_list(args: argparse.Namespace) -> int:
    index = _index(args)
    records = index.records()
    if not records:
        print(f"No runs recorded in {index.path}.")
        return 0
    for r in records:
        m = r.get("metrics") or {}
        accuracy, macro_f1 = m.get("accuracy"), m.get("macro_f1")
        print(
            f"{r.get('run_id')}  {_short_time(r.get('started') or r.get('finished'))}  {r.get('kind', '-')}  "
            f"accuracy {'n/a' if accuracy is None else f'{accuracy:.4f}'}  "
            f"macro-F1 {'n/a' if macro_f1 is None else f'{macro_f1:.4f}'}  {_duration(r.get('duration_s'))}"
        )
    return 0


def cmd_runs_compare(args: argparse.Namespace) -> int:
    if args.last is not None and args.last < 0:
        raise ConfigError(f"-n {args.last} is negative; pass how many of the latest runs (0 for all of them).")
    if args.last is not None and args.run:
        raise ConfigError("-n and --run both choose the runs; pass one of them.")
    last = DEFAULT_LAST if args.last is None else args.last
    index = _index(args)
    records = index.records()
    if args.run:
        by_id = {r.get("run_id"): r for r in records}
        missing = [run for run in args.run if run not in by_id]
        if missing:
            raise RunIndexError(f"No run {', '.join(missing)} in {index.path}; `fer-pipeline runs list` shows them.")
        records = [by_id[run] for run in args.run]
    else:
        records = records[-last:] if last > 0 else records
    if not records:
        print(f"No runs recorded in {index.path}.", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        print(f"{len(records)} run(s) from {index.path}")
        print(compare_table(records, all_params=args.all_params))
    return 0
