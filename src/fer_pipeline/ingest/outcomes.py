"""What reading a source records: the four input statuses, the original FER-2013
usages, one ``FileIssue`` per input not accepted as is, ``_Rejected`` (one file or
row cannot be used) and ``_Collected``, the samples and outcomes gathered while reading."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger("fer_pipeline.ingest")

ACCEPTED, CONVERTED, REJECTED, IGNORED = "accepted", "converted", "rejected", "ignored"
SOURCE_SPLITS = ("Training", "PublicTest", "PrivateTest")
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "test", "PrivateTest": "test"}
MAX_LISTED = 5  # file names quoted in one error message
PROGRESS_EVERY = 5000  # inputs between progress lines: the whole of FER-2013 takes seconds to read
MAX_QUOTED = 40  # characters of an input's text quoted in a message (a CSV row runs to 8 KB)


def _log_progress(done: int, message: str, *args: object) -> None:
    """Log ``message % (done, *args)`` every PROGRESS_EVERY inputs."""
    if done % PROGRESS_EVERY == 0:
        logger.info(message, done, *args)


def _cut(text: str) -> str:
    """``text`` cut to MAX_QUOTED characters with an ellipsis: enough to recognise it."""
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 3] + "..."


def _quoted(text: str) -> str:
    """``repr(text)``, cut as ``_cut`` cuts."""
    return _cut(repr(text))


@dataclass(frozen=True)
class FileIssue:
    """One input file or row that was not accepted as is, or a sample dropped later."""

    path: str
    status: str
    reason: str


class _Rejected(Exception):
    """One file or row cannot be used; the message is the reason."""


@dataclass
class _Collected:
    """Samples and per-input outcomes gathered while reading a source."""

    keys: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    source_splits: list[str] = field(default_factory=list)
    issues: list[FileIssue] = field(default_factory=list)
    given: int = 0
    accepted: int = 0
    accepted_names: list[str] = field(default_factory=list)  # input names (not keys) of the accepted
    warnings: list[str] = field(default_factory=list)

    def add(self, key: str, image: np.ndarray, label: int, split: str, source_split: str) -> None:
        """Record one usable sample."""
        self.keys.append(key)
        self.images.append(image)
        self.labels.append(label)
        self.splits.append(split)
        self.source_splits.append(source_split)

    def issue(self, path: str, status: str, reason: str) -> None:
        """Record an input that was converted, rejected or ignored."""
        self.issues.append(FileIssue(path, status, reason))
