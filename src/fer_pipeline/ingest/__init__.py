"""Read FER-2013 into the canonical dataset, validating every file on the way.

Three sources are understood:
  - the Kaggle zip (``train/<class>/*.jpg``, ``test/<class>/*.jpg``), read in memory;
  - the same layout as a directory;
  - the original ``fer2013.csv`` (``emotion,pixels,Usage``, CSV class codes).
Zip and directory may hold the layout one folder down (``archive/train/...``).

Every input file or CSV row ends up in exactly one of four states, so that
``accepted + converted + rejected + ignored == given``:
  - accepted: a 48x48 grayscale JPEG/PNG (or a valid CSV row), used as is;
  - converted: another image made 48x48 grayscale (only with ``convert=True``);
  - rejected: unusable, with the reason (a strict ingest then fails);
  - ignored: OS junk (``__MACOSX/``, ``.DS_Store``, hidden files), directory entries,
    files outside ``train/`` and ``test/``, blank CSV lines.
Samples are keyed by their path relative to the dataset root (base names are not
unique in FER-2013) or ``<csv name>:<row>``, and sorted by key.

The package's modules: ``reading`` (``read_source``, ``detect_format``,
``source_checksum``), ``zip_source`` and ``folders`` (the two trees of the Kaggle
layout), ``kaggle_layout`` (checking that layout and decoding its images), ``csv_source``,
``decoding`` (image bytes to pixels), ``assemble`` (collected samples to dataset, policies
applied), ``report``, ``outcomes`` (input statuses and what reading collects) and
``policies`` (``IngestOptions``).
"""

from __future__ import annotations

from fer_pipeline.ingest.csv_source import CSV_COLUMNS, PIXELS_PER_IMAGE
from fer_pipeline.ingest.decoding import AS_IS_FORMATS, decode_image
from fer_pipeline.ingest.folders import shown_name
from fer_pipeline.ingest.kaggle_layout import JUNK_NAMES
from fer_pipeline.ingest.outcomes import (
    ACCEPTED,
    CONVERTED,
    IGNORED,
    MAX_LISTED,
    REJECTED,
    SOURCE_SPLITS,
    USAGE_TO_SPLIT,
    FileIssue,
)
from fer_pipeline.ingest.policies import DUPLICATE_POLICIES, IngestOptions
from fer_pipeline.ingest.reading import detect_format, logger, read_source, source_checksum
from fer_pipeline.ingest.report import IngestError, IngestReport, IngestResult

__all__ = [
    "ACCEPTED",
    "AS_IS_FORMATS",
    "CONVERTED",
    "CSV_COLUMNS",
    "DUPLICATE_POLICIES",
    "IGNORED",
    "JUNK_NAMES",
    "MAX_LISTED",
    "PIXELS_PER_IMAGE",
    "REJECTED",
    "SOURCE_SPLITS",
    "USAGE_TO_SPLIT",
    "FileIssue",
    "IngestError",
    "IngestOptions",
    "IngestReport",
    "IngestResult",
    "decode_image",
    "detect_format",
    "logger",
    "read_source",
    "shown_name",
    "source_checksum",
]
