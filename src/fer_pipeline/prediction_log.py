"""The prediction log: one JSON line per classified face, for drift monitoring.

Each line describes what the model saw and said, never the image itself::

    {"time": "2026-11-30T09:15:00.123456+00:00", "model_version": "fer-emotion@3",
     "face_size": 132, "brightness": 118.42, "contrast": 51.07,
     "predicted": "happy", "confidence": 0.9132}

- ``time``: when the face was logged, UTC, ISO 8601;
- ``model_version``: whatever the caller names the model by (a registry ``NAME@<version>``,
  a path, an endpoint's model id);
- ``face_size``: the face box's larger side in the photo's pixels (the whole image's with
  ``--no-detect``), or null when the caller does not know it;
- ``brightness`` / ``contrast``: the mean and standard deviation of the (48, 48) crop the
  model classified, gray levels 0..255;
- ``predicted`` / ``confidence``: the top class and its probability.

Use (a server, or anything calling ``predict``)::

    with PredictionLog("predictions.jsonl", "fer-emotion@3") as log:
        results = predict_images(model, paths, observe=log.observe)      # no face sizes
        seen = Observed()
        faces = classify_photo(model, image, observe=seen)
        log.observe_faces(seen, faces)                                   # with face sizes

Lines are appended under an ``flock`` on ``<log>.lock``, each batch in one write, so
several processes can share one log. ``read_log`` reads it back, checking every line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import FerError, UnusableFileError
from fer_pipeline.files import locked

logger = logging.getLogger(__name__)

FIELDS = ("time", "model_version", "face_size", "brightness", "contrast", "predicted", "confidence")


def image_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mean and standard deviation (gray levels) of (N, H, W) images.

    The same function measures the live crops and the training images, so the two are
    compared on one scale."""
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    return flat.mean(axis=1), flat.std(axis=1)


def prediction_record(
    crop: np.ndarray, probabilities: np.ndarray, model_version: str, face_size: int | None = None
) -> dict[str, Any]:
    """One log line's fields for a face: ``crop`` as the model saw it (gray 0..255),
    ``probabilities`` in ``CLASSES`` order."""
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if probabilities.shape != (len(CLASSES),):
        raise FerError(f"expected {len(CLASSES)} class probabilities, got {probabilities.shape[0]}")
    (brightness,), (contrast,) = image_stats(np.asarray(crop)[np.newaxis])
    top = int(np.argmax(probabilities))
    return {
        "time": datetime.now(timezone.utc).isoformat(),
        "model_version": str(model_version),
        "face_size": None if face_size is None else int(face_size),
        "brightness": round(float(brightness), 2),
        "contrast": round(float(contrast), 2),
        "predicted": CLASSES[top],
        "confidence": round(float(probabilities[top]), 4),
    }


def face_size_of(box: Sequence[int]) -> int:
    """A face box ``(x, y, w, h)``'s larger side, in pixels."""
    return int(max(box[2], box[3]))


def append_records(path: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Append ``records`` as JSON lines, in one write under the log's lock."""
    if not records:
        return
    path = Path(path)
    text = "".join(json.dumps(record, allow_nan=False) + "\n" for record in records)
    try:
        with locked(path.with_name(path.name + ".lock")):
            # O_APPEND: every write lands at the end even if a writer ignores the lock.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            with os.fdopen(fd, "a") as handle:
                handle.write(text)
    except OSError as exc:
        raise FerError(f"cannot append to the prediction log {path}: {exc.strerror or exc}") from None


class Observed(list):
    """An ``observe=`` callback that keeps each (crop, probabilities) it is given, for
    ``PredictionLog.observe_faces`` to pair with the faces' boxes afterwards."""

    def __call__(self, crop: np.ndarray, probabilities: np.ndarray) -> None:
        self.append((crop, probabilities))


class PredictionLog:
    """Appends one line per face to ``path``; ``model_version`` goes on every line.

    ``observe`` has the signature ``predict``'s ``observe=`` expects. Lines are written
    every ``flush_every`` faces (1: at once) and on ``flush()`` / leaving the ``with``
    block. Safe to share between threads and, through the file lock, processes.
    """

    def __init__(self, path: str | Path, model_version: str, *, flush_every: int = 1):
        if flush_every < 1:
            raise FerError(f"flush_every must be at least 1, got {flush_every}")
        self.path = Path(path)
        self.model_version = str(model_version)
        self.flush_every = flush_every
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def observe(self, crop: np.ndarray, probabilities: np.ndarray, face_size: int | None = None) -> None:
        """Log one face: the crop the model saw and its class probabilities."""
        self._add([prediction_record(crop, probabilities, self.model_version, face_size)])

    def observe_faces(self, observed: Sequence[tuple[np.ndarray, np.ndarray]], faces: Sequence[dict]) -> None:
        """Log faces collected with ``Observed``, each with its box's size from ``faces``
        (``predict``'s face results, in the order the faces were observed)."""
        if len(observed) != len(faces):
            raise FerError(f"{len(observed)} observed crops but {len(faces)} face results; they must pair up")
        records = [
            prediction_record(crop, probs, self.model_version, face_size_of(face["box"]))
            for (crop, probs), face in zip(observed, faces)
        ]
        self._add(records)

    def flush(self) -> None:
        """Write the lines not yet written."""
        with self._lock:
            pending, self._pending = self._pending, []
            append_records(self.path, pending)

    def _add(self, records: list[dict[str, Any]]) -> None:
        with self._lock:
            self._pending.extend(records)
            full = len(self._pending) >= self.flush_every
        if full:
            self.flush()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.flush()


def model_version_for(ref: str, registry_root: Path | None = None) -> str:
    """What to log as the model version for a ``predict`` model reference: the registry's
    ``NAME@<version>`` when ``ref`` names a registered model, else the path or URI as given."""
    from fer_pipeline.registry import LocalRegistry, RegistryError, default_registry_root

    if ref.startswith("gs://") or Path(ref).exists():
        return ref
    try:
        return LocalRegistry(registry_root if registry_root is not None else default_registry_root()).resolve(ref).ref
    except RegistryError:
        return ref  # loading the model reports the problem


# ---- reading a log back -----------------------------------------------------------------


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a prediction log, each line checked.

    Raises:
        UnusableFileError: the file is missing, unreadable, holds no lines, or a line is
            blank, not JSON or lacks a valid field (the message names the file and line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UnusableFileError(f"{path} does not exist; pass a prediction log (fer-pipeline predict --log).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UnusableFileError(f"{path} cannot be read as a prediction log ({exc}).") from None
    lines = text.splitlines()
    if len(lines) > 1 and not text.endswith("\n") and _cut_short(lines[-1]):
        # what a writer stopped mid-line leaves (a crash, a full disk): every other line is whole
        logger.warning(
            "%s:%d: the last line is cut short (its write was interrupted); it is left out.", path, len(lines)
        )
        lines.pop()
    if not lines:
        raise UnusableFileError(f"{path} is empty: no predictions were logged.")
    return [_checked_record(line, path, number) for number, line in enumerate(lines, start=1)]


def _cut_short(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return True
    return False


def _checked_record(line: str, path: Path, number: int) -> dict[str, Any]:
    where = f"{path}:{number}"
    if not line.strip():
        raise UnusableFileError(f"{where}: blank line; every line must be one prediction record.")
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise UnusableFileError(
            f"{where}: not a JSON record ({exc}); repair or remove that line (each line is one prediction record)."
        ) from None
    if not isinstance(record, dict):
        raise UnusableFileError(f"{where}: a JSON {type(record).__name__}, not a prediction record.")
    problem = _record_problem(record)
    if problem:
        raise UnusableFileError(f"{where}: {problem}.")
    return record


def _record_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with a parsed record, or None."""
    missing = [name for name in FIELDS if name not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    for name in ("time", "model_version"):  # text, as prediction_record writes them
        if not isinstance(record[name], str) or not record[name]:
            return f"{name} must be text, got {record[name]!r}"
    for name in ("brightness", "contrast"):
        if not _is_number(record[name]) or not 0 <= record[name] <= 255:
            return f"{name} must be a number from 0 to 255, got {record[name]!r}"
    if not _is_number(record["confidence"]) or not 0 <= record["confidence"] <= 1:
        return f"confidence must be a number from 0 to 1, got {record['confidence']!r}"
    if record["predicted"] not in CLASSES:
        return f"predicted {record['predicted']!r} is not one of {', '.join(CLASSES)}"
    size = record["face_size"]
    if size is not None and (not _is_number(size) or size <= 0):
        return f"face_size must be a positive number of pixels or null, got {size!r}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
