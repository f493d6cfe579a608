"""The run record, the local run index, and ``fer-pipeline runs list|compare``.

One record per finished run, the same on every path: the evaluation step builds it
(``run.json`` beside ``metrics.json``) and, on Vertex AI, logs it to a Vertex AI
Experiment (``fer_pipeline.cloud.experiments``); ``make run-local`` and
``fer-pipeline run`` add the wall-clock duration and append it to a local index::

    {"run_id", "kind", "started", "finished", "duration_s",
     "params":  {flat: the training config of both phases, val_fraction, data ...},
     "metrics": {accuracy, macro_f1, weighted_f1, macro_roc_auc, ..., per_class_f1: {class: f1}},
     "phases":  {frozen: {epochs_run, best_epoch, seconds}, finetune: {...}},
     "train_seconds", "artifacts": {report, metrics, tensorboard: [...]}, "registered"}

The index is one JSON file (``{"format_version": 1, "runs": [...]}``, oldest first),
rewritten atomically under a lock (``registry.write_json_atomic``): ``build/runs.json``
for ``fer-pipeline run`` (``$FER_RUNS`` overrides), ``build/local/runs.json`` beside the
local registry for ``make run-local``.

    fer-pipeline runs list [--index PATH]
    fer-pipeline runs compare [-n 2] [--index PATH] [--all-params] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from pydantic import BaseModel, ConfigDict

from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import FerError, UnusableFileError
from fer_pipeline.registry import check_shape, json_ready, write_json_atomic

INDEX_FILE = "runs.json"
RECORD_FILE = "run.json"  # beside metrics.json in the evaluation directory
FORMAT_VERSION = 1
RUNS_ENV = "FER_RUNS"
DEFAULT_INDEX = Path("build") / INDEX_FILE
# Headline metrics, in the order `runs compare` shows them.
SUMMARY_METRICS = (
    ("accuracy", "test accuracy"),
    ("macro_f1", "macro-F1"),
    ("weighted_f1", "weighted F1"),
    ("macro_roc_auc", "macro ROC-AUC"),
    ("log_loss", "log loss"),
    ("public_test_accuracy", "PublicTest accuracy"),
    ("private_test_accuracy", "PrivateTest accuracy"),
)
LOWER_IS_BETTER = {"log_loss"}
# Phase-specific TrainConfig fields: taken from that phase's own history record.
_PHASE_FIELDS = {"frozen": ("frozen_",), "finetune": ("finetune_", "unfreeze_from")}
# TrainConfig fields that say where a run keeps things, not how it trains.
NOT_PARAMETERS = frozenset({"backup_dir"})


class _RunShape(BaseModel):
    """The types the readers of a run record rely on (every field may be absent)."""

    model_config = ConfigDict(extra="allow")
    run_id: str | None = None
    kind: str | None = None
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    train_seconds: float | None = None
    params: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None


class _RunIndexShape(BaseModel):
    model_config = ConfigDict(extra="allow")
    format_version: int
    runs: list[_RunShape] = []


class RunIndexError(FerError):
    """The run index cannot be read, or holds too few runs for the request."""


class RunIndexFileError(RunIndexError, UnusableFileError):
    """runs.json is not valid JSON, of another format, or the wrong shape."""


def default_index() -> Path:
    """The index when none is given: ``$FER_RUNS``, else ``build/runs.json``."""
    return Path(os.environ.get(RUNS_ENV) or DEFAULT_INDEX)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def iso(timestamp: float) -> str:
    """A ``time.time()`` value as an ISO 8601 UTC timestamp, to the second."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------ the record
def params_from_histories(histories: Iterable[dict]) -> dict[str, Any]:
    """The training parameters of a run from its phases' ``history.json`` records.

    Each phase records the whole TrainConfig it ran with; the phase-specific fields
    (``frozen_*``; ``finetune_*`` and ``unfreeze_from``) come from their own phase,
    which matters in a pipeline, where each phase's component sets only its own.
    """
    params: dict[str, Any] = {}
    for record in histories:
        config = record.get("config") or {}
        owned = _PHASE_FIELDS.get(str(record.get("phase")), ())
        for key, value in config.items():
            if key in NOT_PARAMETERS:
                continue
            if key not in params or key.startswith(owned):
                params[key] = value
    return params


def summary_metrics(metrics: dict) -> dict[str, Any]:
    """The headline metrics and each class's F1 from an evaluation's ``metrics.json``."""
    summary: dict[str, Any] = {key: metrics.get(key) for key, _ in SUMMARY_METRICS}
    per_class = metrics.get("per_class") or {}
    summary["per_class_f1"] = {name: (per_class.get(name) or {}).get("f1") for name in CLASSES}
    summary["num_test_samples"] = metrics.get("num_test_samples")
    return summary


def run_record(
    *,
    run_id: str,
    kind: str,
    params: dict[str, Any],
    metrics: dict,
    histories: Sequence[dict] = (),
    started: str | None = None,
    finished: str | None = None,
    duration_s: float | None = None,
    artifacts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One run's record (see the module docstring)."""
    phases = {
        str(h.get("phase", f"phase{i + 1}")): {
            "epochs_run": h.get("epochs_run"),
            "best_epoch": h.get("best_epoch"),
            "seconds": h.get("seconds"),
        }
        for i, h in enumerate(histories)
    }
    seconds = [p["seconds"] for p in phases.values() if isinstance(p["seconds"], (int, float))]
    return json_ready(
        {
            "run_id": run_id,
            "kind": kind,
            "started": started,
            "finished": finished or now_iso(),
            "duration_s": round(duration_s, 1) if duration_s is not None else None,
            "params": {k: v for k, v in params.items() if k not in NOT_PARAMETERS},
            "metrics": summary_metrics(metrics),
            "phases": phases,
            "train_seconds": round(sum(seconds), 1) if seconds else None,
            "artifacts": dict(artifacts or {}),
        }
    )


def load_histories(paths: Iterable[str | Path]) -> list[dict]:
    """The phases' ``history.json`` records that exist, in order."""
    return [json.loads(Path(p).read_text()) for p in paths if Path(p).is_file()]


def pipeline_run_name(artifact_path: str | Path) -> str:
    """The pipeline run an output artifact belongs to, from its path.

    Vertex AI and kfp.local both lay outputs out as ``<root>/.../<run name>/<task>/<output>``
    (the run name is the pipeline job's); this keeps a task's inputs, hence its cache
    key, free of the run name.
    """
    return Path(artifact_path).parent.parent.name or "pipeline-run"


def run_id_for(name: str, started: float) -> str:
    """``NAME-YYYYmmdd-HHMMSS`` (UTC) for a run without a pipeline job name."""
    stamp = datetime.fromtimestamp(started, timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}"


def record_finished_run(
    evaluation_dir: str | Path,
    history_paths: Sequence[str | Path],
    params: dict[str, Any],
    *,
    run_id: str,
    kind: str,
    started: float,
    finished: float,
    index: str | Path,
    artifacts: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict:
    """Build the record of a finished local run, write it beside its metrics, and append it to ``index``.

    Args:
        evaluation_dir: Holds ``metrics.json`` (and ``report.html``); ``run.json`` is written here.
        history_paths: The phases' ``history.json`` files, in order.
        params: The run's parameters (flat).
        run_id: Unique name of the run in the index.
        kind: ``cli`` or ``kfp-local``.
        started, finished: Wall-clock times (``time.time()``).
        index: The run index file.
        artifacts: Paths worth keeping with the record (report, metrics, TensorBoard logs).
        extra: More top-level fields (e.g. ``registered``).
    """
    evaluation_dir = Path(evaluation_dir)
    metrics = json.loads((evaluation_dir / "metrics.json").read_text())
    record = run_record(
        run_id=run_id,
        kind=kind,
        params=params,
        metrics=metrics,
        histories=load_histories(history_paths),
        started=iso(started),
        finished=iso(finished),
        duration_s=finished - started,
        artifacts={
            "report": str(evaluation_dir / "report.html"),
            "metrics": str(evaluation_dir / "metrics.json"),
            **(artifacts or {}),
        },
    )
    record.update(json_ready(extra or {}))
    write_record(evaluation_dir, record)
    RunIndex(index).append(record)
    return record


def write_record(evaluation_dir: str | Path, record: dict) -> Path:
    """Write ``run.json`` into an evaluation directory."""
    path = Path(evaluation_dir) / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True))
    return path


def flat_params(record: dict) -> dict[str, str | int | float]:
    """Parameters as Vertex AI Experiments takes them: str, int or float values only."""
    flat: dict[str, str | int | float] = {}
    for key, value in (record.get("params") or {}).items():
        if isinstance(value, bool) or value is None:
            flat[key] = str(value).lower() if value is not None else ""
        elif isinstance(value, (int, float)) and math.isfinite(value):
            flat[key] = value
        elif isinstance(value, (list, tuple, dict)):
            flat[key] = json.dumps(value)
        else:
            flat[key] = str(value)
    return flat


def flat_metrics(record: dict) -> dict[str, float]:
    """The record's numbers as one flat dict (``f1_<class>`` per class); undefined ones left out."""
    metrics = record.get("metrics") or {}
    values: dict[str, Any] = {key: metrics.get(key) for key, _ in SUMMARY_METRICS}
    values.update({f"f1_{name}": f1 for name, f1 in (metrics.get("per_class_f1") or {}).items()})
    values["train_seconds"] = record.get("train_seconds")
    values["duration_s"] = record.get("duration_s")
    return {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


# ------------------------------------------------------------------ the index
class RunIndex:
    """The local run index: one JSON file, oldest run first."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunIndexFileError(f"{self.path} is not valid JSON ({exc}); move it away to start a new index.") from exc
        if isinstance(data, dict) and data.get("format_version") != FORMAT_VERSION:
            raise RunIndexFileError(
                f"{self.path} has format_version {data.get('format_version')!r}; this version reads {FORMAT_VERSION}."
            )
        check_shape(_RunIndexShape, data, self.path, "a run index", RunIndexFileError)
        return list(data.get("runs", []))

    def append(self, record: dict) -> dict:
        """Add a record (replacing one with the same ``run_id``); atomic, serialised by a lock."""
        with self._locked():
            runs = [r for r in self.records() if r.get("run_id") != record.get("run_id")]
            runs.append(json_ready(record))
            write_json_atomic(self.path, {"format_version": FORMAT_VERSION, "runs": runs})
        return record

    def last(self, n: int) -> list[dict]:
        runs = self.records()
        return runs[-n:] if n > 0 else runs

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: single writer only
            yield
            return
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------ compare
def differing_params(records: Sequence[dict]) -> list[str]:
    """Parameter names whose value is not the same in every record (missing counts as a value)."""
    names = sorted({key for r in records for key in (r.get("params") or {})})
    marker = object()
    return [
        name
        for name in names
        if len({json.dumps((r.get("params") or {}).get(name, marker), default=repr, sort_keys=True) for r in records}) > 1
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
    return [
        "n/a" if v is None else f"{v:.4f}{' *' if best is not None and v == best else '  '}" for v in values
    ]


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
    compare.add_argument("-n", "--last", type=int, default=2, help="how many of the latest runs (default 2; 0 = all)")
    compare.add_argument("--run", action="append", default=[], metavar="RUN_ID", help="compare these runs instead")
    compare.add_argument("--all-params", action="store_true", help="show every parameter, not only those that differ")
    compare.add_argument("--json", action="store_true", help="print the records as JSON")
    _index_option(compare)
    compare.set_defaults(func=cmd_runs_compare)


def _index_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index", type=Path, default=None,
        help=f"run index file (default: ${RUNS_ENV} or {DEFAULT_INDEX}; make run-local writes build/local/runs.json)",
    )


def _index(args: argparse.Namespace) -> RunIndex:
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
    index = _index(args)
    records = index.records()
    if args.run:
        by_id = {r.get("run_id"): r for r in records}
        missing = [run for run in args.run if run not in by_id]
        if missing:
            raise RunIndexError(f"No run {', '.join(missing)} in {index.path}; `fer-pipeline runs list` shows them.")
        records = [by_id[run] for run in args.run]
    else:
        records = records[-args.last:] if args.last > 0 else records
    if not records:
        print(f"No runs recorded in {index.path}.", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        print(f"{len(records)} run(s) from {index.path}")
        print(compare_table(records, all_params=args.all_params))
    return 0
