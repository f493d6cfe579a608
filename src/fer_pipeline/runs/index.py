"""The local run index: one JSON file, ``{"format_version": 1, "runs": [...]}``, oldest
first, rewritten atomically under a lock (``files.write_json`` inside ``files.locked``):
``build/runs.json`` for ``fer-pipeline run`` (``$FER_RUNS`` overrides),
``build/local/runs.json`` beside the local registry for ``make run-local``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from fer_pipeline.errors import FerError, UnusableFileError
from fer_pipeline.files import locked, write_json
from fer_pipeline.registry import check_shape, json_ready

INDEX_FILE = "runs.json"
FORMAT_VERSION = 1
RUNS_ENV = "FER_RUNS"
DEFAULT_INDEX = Path("build") / INDEX_FILE


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
            raise RunIndexFileError(
                f"{self.path} is not valid JSON ({exc}); move it away to start a new index."
            ) from exc
        if isinstance(data, dict) and data.get("format_version") != FORMAT_VERSION:
            raise RunIndexFileError(
                f"{self.path} has format_version {data.get('format_version')!r}; this version reads {FORMAT_VERSION}."
            )
        check_shape(_RunIndexShape, data, self.path, "a run index", RunIndexFileError)
        return list(data.get("runs", []))

    def append(self, record: dict) -> dict:
        """Add a record (replacing one with the same ``run_id``); atomic, serialised by a lock."""
        with locked(self.path.with_name(f".{self.path.name}.lock")):
            runs = [r for r in self.records() if r.get("run_id") != record.get("run_id")]
            runs.append(json_ready(record))
            write_json(self.path, {"format_version": FORMAT_VERSION, "runs": runs}, sort_keys=True)
        return record

    def last(self, n: int) -> list[dict]:
        runs = self.records()
        return runs[-n:] if n > 0 else runs
