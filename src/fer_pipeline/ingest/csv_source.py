"""The original ``fer2013.csv`` (``emotion,pixels,Usage``, CSV class codes): one sample per
row, numbered as a spreadsheet shows them."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from fer_pipeline.classes import CLASS_INDEX, CSV_CODE_TO_CLASS, IMAGE_SIZE
from fer_pipeline.errors import DatasetError
from fer_pipeline.ingest.outcomes import (
    IGNORED,
    REJECTED,
    SOURCE_SPLITS,
    USAGE_TO_SPLIT,
    _Collected,
    _cut,
    _log_progress,
    _quoted,
    _Rejected,
)

CSV_COLUMNS = ("emotion", "pixels", "Usage")
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE


def _read_csv(path: Path) -> _Collected:
    """Read the original ``emotion,pixels,Usage`` CSV.

    Rows are numbered as a spreadsheet shows them: the header is row 1, so the first
    image is ``fer2013.csv:2``.
    """
    collected = _Collected()
    row = 0  # the last row read whole; an unreadable one is the next
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle, warnings.catch_warnings():
            # numpy warns (future: raises) on unparsable text; make it an error now.
            warnings.simplefilter("error", DeprecationWarning)
            reader = csv.reader(handle)
            columns = _csv_columns(next(reader, None), path.name)
            row = 1
            for row, fields in enumerate(reader, start=2):
                collected.given += 1
                _read_csv_row(fields, row, columns, path.name, collected)
                _log_progress(collected.given, "read %d rows of %s", path.name)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text ({exc}); is it really fer2013.csv?") from None
    except csv.Error as exc:
        raise DatasetError(f"{path} row {row + 1}: unreadable CSV ({exc}); fix or remove that row.") from None
    return collected


def _csv_columns(header: list[str] | None, name: str) -> dict[str, int]:
    """Column positions of emotion, pixels and Usage; DatasetError naming any missing or repeated."""
    if not header:
        raise DatasetError(f"{name} is empty; expected a header row {','.join(CSV_COLUMNS)} and one row per image.")
    names = [column.strip() for column in header]
    repeated = [c for c in CSV_COLUMNS if names.count(c) > 1]
    if repeated:  # which of the two is meant cannot be told
        raise DatasetError(
            f"{name} has the column(s) {', '.join(repeated)} more than once (header: {_cut(','.join(header))}); "
            f"keep one of each of {','.join(CSV_COLUMNS)}."
        )
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        hint = " The first row looks like an image row: is the header row missing?" if names[0].isdigit() else ""
        raise DatasetError(
            f"{name} has no column(s) {', '.join(missing)} (header: {_cut(','.join(header))}); "
            f"the original fer2013.csv has {','.join(CSV_COLUMNS)}.{hint}"
        )
    return {c: names.index(c) for c in CSV_COLUMNS}


def _read_csv_row(fields: list[str], row: int, columns: dict[str, int], name: str, collected: _Collected) -> None:
    """Parse one CSV row into the collection, or record why not."""
    key = f"{name}:{row}"
    if not fields or not any(f.strip() for f in fields):
        collected.issue(key, IGNORED, "blank line")
        return
    try:
        if len(fields) <= max(columns.values()):
            raise _Rejected(f"{len(fields)} field(s), expected {','.join(CSV_COLUMNS)}")
        class_name = _csv_class(fields[columns["emotion"]])
        usage = _csv_usage(fields[columns["Usage"]])
        image = _csv_pixels(fields[columns["pixels"]])
    except _Rejected as exc:
        collected.issue(key, REJECTED, str(exc))
        return
    collected.accepted += 1
    collected.accepted_names.append(key)
    collected.add(key, image, CLASS_INDEX[class_name], USAGE_TO_SPLIT[usage], usage)


def _csv_class(text: str) -> str:
    """The class name for a CSV emotion code (4=sad, 5=surprise, 6=neutral)."""
    try:
        code = int(text.strip())
    except ValueError:
        raise _Rejected(f"emotion {_quoted(text)} is not an integer code 0-6") from None
    if code not in CSV_CODE_TO_CLASS:
        raise _Rejected(f"emotion {code} is out of range 0-6")
    return CSV_CODE_TO_CLASS[code]


def _csv_usage(text: str) -> str:
    """The Usage value, checked against the three FER-2013 ones."""
    usage = text.strip()
    if usage not in USAGE_TO_SPLIT:
        raise _Rejected(f"unknown Usage {_quoted(usage)}, expected one of {', '.join(SOURCE_SPLITS)}")
    return usage


def _csv_pixels(text: str) -> np.ndarray:
    """48x48 uint8 from 2304 space-separated integers 0-255."""
    try:
        values = np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:
        bad = next((t for t in text.split() if not t.isdigit()), text)
        if "," in bad:
            raise _Rejected(
                f"pixel values {_quoted(bad)} are separated by commas; they must be separated by spaces"
            ) from None
        raise _Rejected(f"non-numeric pixel value {_quoted(bad)}") from None
    if values.size != PIXELS_PER_IMAGE:
        raise _Rejected(f"{values.size} pixel values, expected {PIXELS_PER_IMAGE} ({IMAGE_SIZE}x{IMAGE_SIZE})")
    if values.min() < 0 or values.max() > 255:
        raise _Rejected(f"pixel values must be 0-255, found {int(values.min())}..{int(values.max())}")
    return values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)
