"""The local run index: one JSON file, ``{"format_version": 1, "runs": [...]}``, oldest
first, rewritten atomically under a lock (``files.write_json`` inside ``files.locked``):
``build/runs.json`` for ``fer-pipeline run`` (``$FER_RUNS`` overrides),
``build/local/runs.json`` beside the local registry for ``make run-local``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictFloat, create_model

from fer_pipeline.errors import FerError, UnusableFileError, check_shape
from fer_pipeline.files import locked, write_json
from fer_pipeline.registry import json_ready

INDEX_FILE = "runs.json"
FORMAT_VERSION = 1
RUNS_ENV = "FER_RUNS"
DEFAULT_INDEX = Path("build") / INDEX_FILE
# Headline metrics, in the order `runs compare` shows them (a run record's "metrics"
# holds each, a number or null when undefined; ``runs.record.summary_metrics`` writes them).
SUMMARY_METRICS = (
    ("accuracy", "test accuracy"),
    ("macro_f1", "macro-F1"),
    ("weighted_f1", "weighted F1"),
    ("macro_roc_auc", "macro ROC-AUC"),
    ("log_loss", "log loss"),
    ("public_test_accuracy", "PublicTest accuracy"),
    ("private_test_accuracy", "PrivateTest accuracy"),
)

# The metrics `runs list|compare` print as numbers: each a number (an int too) or null, so a
# string or a bool is refused by name instead of failing in a format string.
_MetricsShape = create_model(
    "_MetricsShape",
    __config__=ConfigDict(extra="allow"),
    **{key: (StrictFloat | None, None) for key, _ in SUMMARY_METRICS},
    per_class_f1=(dict[str, StrictFloat | None] | None, None),
    num_test_samples=(StrictFloat | None, None),
)


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
    metrics: _MetricsShape | None = None
    phases: dict[str, dict[str, Any] | None] | None = None


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


class RunIndex:
    """The local run index: one JSON file, oldest run first."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def records(self) -> list[dict]:
        """The recorded runs, oldest first; none when the index does not exist yet.

        Raises:
            RunIndexError: the path is a folder (or not a file), so no index can live there.
            RunIndexFileError: the index is unreadable, not JSON, or not a run index.
        """
        if not self.path.exists():
            return []
        if not self.path.is_file():
            kind = "a folder" if self.path.is_dir() else "not a regular file"
            raise RunIndexError(
                f"{self.path} is {kind}; the run index is a file (e.g. {DEFAULT_INDEX}): pass its path."
            )
        try:
            data = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunIndexFileError(
                f"{self.path} is not valid JSON ({exc}); move it away to start a new index."
            ) from exc
        except OSError as exc:
            raise RunIndexFileError(f"{self.path} cannot be read ({exc.strerror or exc}).") from None
        if isinstance(data, dict) and data.get("format_version") != FORMAT_VERSION:
            raise RunIndexFileError(
                f"{self.path} has format_version {data.get('format_version')!r}; this version reads {FORMAT_VERSION}."
            )
        check_shape(_RunIndexShape, data, self.path, "a run index", RunIndexFileError, name_of=_run_named(data))
        return list(data.get("runs", []))

    def append(self, record: dict) -> dict:
        """Add a record (replacing one with the same ``run_id``); atomic, serialised by a lock."""
        with locked(self.path.with_name(f".{self.path.name}.lock")):
            runs = [r for r in self.records() if r.get("run_id") != record.get("run_id")]
            runs.append(json_ready(record))
            write_json(self.path, {"format_version": FORMAT_VERSION, "runs": runs}, sort_keys=True)
        return record

    def last(self, n: int) -> list[dict]:
        """The latest ``n`` runs; all of them for 0."""
        if n < 0:
            raise ValueError(f"n must be 0 (all runs) or more, not {n}")
        runs = self.records()
        return runs[-n:] if n > 0 else runs


def _run_named(data: Any):
    """For check_shape: the run a misplaced field is in, by its run_id (``runs.3`` alone
    would send a reader counting)."""

    def name_of(loc: tuple) -> str | None:
        if len(loc) > 1 and loc[0] == "runs" and isinstance(loc[1], int):
            run = data["runs"][loc[1]]
            if isinstance(run, dict) and isinstance(run.get("run_id"), str):
                return f"run {run['run_id']!r}"
        return None

    return name_of
