"""`fer-pipeline monitor LOG --against DATASET`: has what the model sees drifted from its
training set? Reads a prediction log (``predict --log``, or a server's) and the training
split of a dataset, prints a table (or ``--json``), and exits 0 when nothing drifted,
3 (``EXIT_DRIFT``) when something did, 1 when the log or dataset is unusable."""

from __future__ import annotations

import argparse
import json
import sys

from fer_pipeline.errors import EXIT_DRIFT
from fer_pipeline.monitoring import MIN_FACES, Thresholds


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "monitor",
        help="compare a prediction log with the training set; exit 3 on drift",
        description="Population stability index (PSI) of the predicted-class mix, crop brightness and "
        "contrast against the training split, with KS / chi-square tests beside it. Exit 0 no drift "
        "(or too few faces to tell), 3 drift, 1 an unusable log or dataset, 2 a wrong option.",
    )
    p.add_argument("log", help="prediction log (JSON lines from `fer-pipeline predict --log`)")
    p.add_argument(
        "--against",
        required=True,
        metavar="DATASET",
        help="canonical dataset folder or gs:// prefix (from ingest), Kaggle zip or folder, or fer2013.csv; its train split",
    )
    p.add_argument("--watch", type=float, default=0.1, help="PSI above this is worth watching (default 0.1)")
    p.add_argument("--drift", type=float, default=0.2, help="PSI above this is drift (default 0.2)")
    p.add_argument(
        "--min-faces", type=int, default=MIN_FACES, help=f"fewer faces are too few to tell (default {MIN_FACES})"
    )
    p.add_argument("--model-version", help="only the log's lines of this model version")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.set_defaults(func=cmd_monitor)


def cmd_monitor(args: argparse.Namespace) -> int:
    from fer_pipeline.errors import ConfigError
    from fer_pipeline.monitoring import compare_log, format_report, load_reference_dataset, reference_from_dataset
    from fer_pipeline.prediction_log import read_log

    thresholds = Thresholds(args.watch, args.drift, args.min_faces)  # options checked before any reading
    records = read_log(args.log)
    if args.model_version is not None:
        records = [r for r in records if str(r["model_version"]) == args.model_version]
        if not records:
            raise ConfigError(f"{args.log} has no lines of model version {args.model_version!r}")
    reference = reference_from_dataset(load_reference_dataset(args.against))
    report = compare_log(records, reference, thresholds)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    if report.drifted:
        print(f"drift: {', '.join(_named(report))}", file=sys.stderr)
        return EXIT_DRIFT
    return 0


def _named(report) -> list[str]:
    return [f"{f.name} (PSI {f.psi:.2f})" for f in report.features if f.name in report.drifted]
