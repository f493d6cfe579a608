"""The real FER-2013 Kaggle zip: counts, keys, duplicates and leakage (skipped where absent)."""

from __future__ import annotations

import hashlib
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from fer_pipeline.classes import CLASS_INDEX, CLASSES
from fer_pipeline.ingest import IngestResult, read_source
from fer_pipeline.quality import analyse_duplicates

pytestmark = pytest.mark.realdata

# From ../shared/data/fer2013/README.md (the msambare counts).
EXPECTED_COUNTS = {
    "train": dict(zip(CLASSES, (3995, 436, 4097, 7215, 4965, 4830, 3171))),
    "test": dict(zip(CLASSES, (958, 111, 1024, 1774, 1233, 1247, 831))),
}
SAME_BASENAME_PAIRS = [
    ("train/neutral/Training_52789098.jpg", "train/surprise/Training_52789098.jpg"),
    ("train/angry/Training_8475486.jpg", "train/surprise/Training_8475486.jpg"),
]


@pytest.fixture(scope="module")
def real(real_zip: Path) -> IngestResult:
    """The real zip, read once for the module."""
    return read_source(real_zip)


@pytest.fixture(scope="module")
def identical_file_groups(real_zip: Path) -> list[list[str]]:
    """Groups (2+ members) of zip entries with byte-identical contents."""
    by_digest = defaultdict(list)
    with zipfile.ZipFile(real_zip) as archive:
        for info in archive.infolist():
            by_digest[hashlib.sha256(archive.read(info)).digest()].append(info.filename)
    return [sorted(names) for names in by_digest.values() if len(names) > 1]


def test_split_and_class_counts(real: IngestResult):
    dataset, report = real.dataset, real.report

    assert report.counts == EXPECTED_COUNTS
    assert dataset.manifest["counts"] == EXPECTED_COUNTS
    assert len(dataset.indices("train")) == 28_709
    assert len(dataset.indices("test")) == 7_178
    assert dataset.images.shape == (35_887, 48, 48) and dataset.images.dtype == np.uint8


def test_every_file_accepted(real: IngestResult):
    report = real.report

    assert report.usable
    assert report.status_counts() == {"accepted": 35_887, "converted": 0, "rejected": 0, "ignored": 0}
    assert report.given == 35_887
    assert real.dataset.manifest["source_sha256"] == (
        "9c437161078a13549174c8852df75a9be3123bcfc8b56184d72db88c72681aa1"
    )


def test_original_usage_from_file_names(real: IngestResult):
    dataset = real.dataset

    expected = {"Training": 28_709, "PublicTest": 3_589, "PrivateTest": 3_589}
    assert dataset.manifest["source_split_counts"] == expected
    train, test = dataset.indices("train"), dataset.indices("test")
    assert set(dataset.source_splits[train]) == {"Training"}
    assert set(dataset.source_splits[test]) == {"PublicTest", "PrivateTest"}


def test_same_base_names_are_distinct_samples(real: IngestResult):
    dataset = real.dataset
    position = {str(key): i for i, key in enumerate(dataset.keys)}

    assert len(position) == len(dataset)  # keys are unique
    for first, second in SAME_BASENAME_PAIRS:
        a, b = position[first], position[second]
        assert dataset.labels[a] == CLASS_INDEX[first.split("/")[1]]
        assert dataset.labels[b] == CLASS_INDEX[second.split("/")[1]]
        assert not np.array_equal(dataset.images[a], dataset.images[b])  # different images, as the README says


def test_duplicate_groups_match_identical_files(real: IngestResult, identical_file_groups: list[list[str]]):
    duplicates = real.report.duplicates

    # README: 1,516 groups of byte-identical files, 3,369 files. Recounted here from the zip.
    assert len(identical_file_groups) == 1_516
    assert sum(map(len, identical_file_groups)) == 3_369
    # Pixel identity could only merge more files (different bytes, same pixels); on this zip it
    # finds exactly the byte-identical groups, so the numbers are equal.
    assert duplicates["groups"] == 1_516
    assert duplicates["files"] == 3_369
    analysis = analyse_duplicates(real.dataset.images, real.dataset.labels, real.dataset.splits)
    keys = real.dataset.keys
    pixel_groups = sorted(sorted(str(keys[i]) for i in group) for group in analysis.groups)
    assert pixel_groups == sorted(identical_file_groups)


def test_duplicate_and_leakage_figures_are_consistent(real: IngestResult):
    duplicates, leakage = real.report.duplicates, real.report.leakage

    assert 0 < duplicates["conflicting_groups"] < duplicates["groups"]
    assert 2 * duplicates["conflicting_groups"] <= duplicates["conflicting_files"] <= duplicates["files"]
    assert 2 * duplicates["groups"] <= duplicates["files"]
    assert 0 < duplicates["constant_images"] <= duplicates["files"]  # the blank placeholders repeat
    # Leaked images are duplicates that span both splits.
    assert 0 < leakage["test_images"] < duplicates["files"]
    assert 0 < leakage["train_images"] < duplicates["files"]
    assert leakage["test_images"] + leakage["train_images"] <= duplicates["files"]
    assert 0 <= leakage["label_mismatch"] <= leakage["test_images"]
    # Figures found on the stored zip (see the report of the ingest work); pinned to catch drift.
    conflicts = (duplicates["conflicting_groups"], duplicates["conflicting_files"], duplicates["constant_images"])
    assert conflicts == (57, 160, 12)
    assert (leakage["test_images"], leakage["train_images"], leakage["label_mismatch"]) == (568, 703, 28)
