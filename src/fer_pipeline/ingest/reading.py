"""The entry points: ``read_source`` (what a source is, read it, build the dataset),
``detect_format`` and ``source_checksum``."""

from __future__ import annotations

import logging
import time
import zipfile
from pathlib import Path

from fer_pipeline.errors import DatasetError, FerError
from fer_pipeline.ingest.assemble import _finish
from fer_pipeline.ingest.csv_source import _read_csv
from fer_pipeline.ingest.folders import _DirTree
from fer_pipeline.ingest.kaggle_layout import _read_tree
from fer_pipeline.ingest.policies import IngestOptions
from fer_pipeline.ingest.report import IngestResult
from fer_pipeline.ingest.zip_source import _file_sha256, _ZipTree

logger = logging.getLogger("fer_pipeline.ingest")

_SOURCE_KINDS = "give a Kaggle .zip, its unpacked folder, or fer2013.csv"


def read_source(path: str | Path, options: IngestOptions = IngestOptions()) -> IngestResult:
    """Read a Kaggle zip, Kaggle folder tree or fer2013.csv into the canonical dataset.

    Args:
        path: a ``.zip`` file, a directory, or a ``.csv`` file.
        options: how to treat odd images, duplicates, leakage and rejected files.

    Returns:
        The dataset, sorted by key with its manifest filled in, and the ingest report.

    Raises:
        DatasetError: the source is missing, of an unknown kind, or laid out wrongly
            (classes, splits, columns, unsafe paths); or, as ``IngestError`` carrying the
            report, files were rejected under ``strict``, a class ended up empty, or
            ``duplicate_policy="fail"`` met identical images with different labels.
    """
    path = Path(path)
    started = time.monotonic()
    source_format = detect_format(path)
    logger.info("reading %s (%s)", path, source_format)
    if source_format == "fer2013-csv":
        collected = _read_csv(path)
        checksum = source_checksum(path)
    else:
        tree = _ZipTree(path, options) if source_format == "kaggle-zip" else _DirTree(path)
        with tree:
            collected = _read_tree(tree, options)
            checksum = tree.checksum()
    result = _finish(path, source_format, checksum, collected, options)
    logger.info("read %d samples from %s in %.1f s", len(result.dataset), path.name, time.monotonic() - started)
    return result


def source_checksum(path: str | Path) -> str:
    """SHA-256 (hex) identifying a source.

    For a file (zip or csv) it is the hash of its bytes. For a directory it is the hash
    over its files' sorted ``(relative path, sha256 of file)`` pairs, so it does not
    depend on timestamps or on the order the file system lists them in.
    """
    path = Path(path)
    if path.is_dir():
        with _DirTree(path) as tree:
            return tree.checksum()
    _refuse_special_file(path)
    return _file_sha256(path)


def _refuse_special_file(path: Path) -> None:
    """A device, FIFO or socket is a wrong command line (exit 2): reading one could block forever."""
    if path.exists() and not path.is_file() and not path.is_dir():
        raise FerError(f"Dataset source {path} is not a regular file or folder; {_SOURCE_KINDS}.")


def detect_format(path: Path) -> str:
    """ "kaggle-zip", "kaggle-dir" or "fer2013-csv", from what ``path`` is."""
    if path.is_dir():
        return "kaggle-dir"
    _refuse_special_file(path)
    if not path.is_file():
        raise DatasetError(f"Dataset source {path} does not exist; {_SOURCE_KINDS}.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "fer2013-csv"
    if suffix == ".zip" or zipfile.is_zipfile(path):
        return "kaggle-zip"
    raise DatasetError(f"Cannot tell what {path} is (suffix {path.suffix!r}); {_SOURCE_KINDS}.")
