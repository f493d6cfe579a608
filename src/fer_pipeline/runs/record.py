"""The run record: one per finished run, the same on every path. The evaluation step
builds it (``run.json`` beside ``metrics.json``) and, on Vertex AI, logs it to a Vertex AI
Experiment (``fer_pipeline.cloud.experiments``); ``make run-local`` and
``fer-pipeline run`` add the wall-clock duration and append it to the run index
(``fer_pipeline.runs.index``)::

    {"run_id", "kind", "started", "finished", "duration_s",
     "params":  {flat: the training config of both phases, val_fraction, data ...},
     "metrics": {accuracy, macro_f1, weighted_f1, macro_roc_auc, ..., per_class_f1: {class: f1}},
     "phases":  {frozen: {epochs_run, best_epoch, averaged_epochs, seconds}, finetune: {...}},
     "train_seconds", "artifacts": {report, metrics, tensorboard: [...]}, "registered"}
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import UnusableFileError, read_json_file
from fer_pipeline.files import write_json
from fer_pipeline.registry import json_ready
from fer_pipeline.runs.index import SUMMARY_METRICS, RunIndex

RECORD_FILE = "run.json"  # beside metrics.json in the evaluation directory
# SUMMARY_METRICS, the headline metrics in the order `runs compare` shows them, lives in
# runs.index, whose shape check types them; it stays importable from here.
# TrainConfig fields that say where a run keeps things, not how it trains.
NOT_PARAMETERS = frozenset({"backup_dir"})


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def iso(timestamp: float) -> str:
    """A ``time.time()`` value as an ISO 8601 UTC timestamp, to the second."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


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
            "averaged_epochs": (h.get("averaged") or {}).get("epochs"),  # None: the best epoch's weights
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


HISTORY_FILE_WHAT = "a history.json written by `fer-pipeline train-frozen` or `fer-pipeline fine-tune`"


def load_histories(paths: Iterable[str | Path]) -> list[dict]:
    """The phases' history.json records, in order; UnusableFileError naming the first path
    that is missing, not JSON, or not a phase's history (``trainer._save_phase``:
    ``{"phase": str, "history": {metric: [number per epoch]}, ...}``)."""
    histories = []
    for path in paths:
        record = read_json_file(path, HISTORY_FILE_WHAT)
        if problem := _history_problem(record):
            raise UnusableFileError(f"{path} is not {HISTORY_FILE_WHAT}: {problem}; pass that phase's history.json.")
        histories.append(record)
    return histories


def _history_problem(record: Any) -> str:
    """What keeps ``record`` from being a phase's history record; "" when nothing does."""
    if not isinstance(record, dict):
        return f"it holds a JSON {type(record).__name__}, not an object"
    if not isinstance(record.get("phase"), str) or not isinstance(record.get("history"), dict):
        return 'it lacks "phase" (a name) and "history" (per-epoch metrics)'
    for metric, values in record["history"].items():
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            return f"history.{metric} is not a list of numbers"
    return ""


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
    write_json(path, record, sort_keys=True)
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
