"""Exact-duplicate and train/test leakage analysis on decoded pixels.

Two samples are duplicates when their decoded 48x48 uint8 pixels are identical. This
finds every pair of identical files and also different files that decode to the same
pixels, so its numbers can be slightly larger than a byte-level comparison of files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DuplicateAnalysis:
    """Groups of pixel-identical images in one dataset, as indices into it.

    Attributes:
        group_of: (N,) group number of each sample, -1 for an image that occurs once.
        groups: member indices of each group of two or more identical images, in order of
            first member.
        conflicting: numbers of the groups whose members carry more than one label.
        leaked_test: test samples identical to at least one train sample.
        leaked_train: train samples identical to at least one test sample.
        leaked_label_mismatch: leaked test samples with a train twin of another label.
        constant: samples whose pixels all have one value (blank or placeholder images).
    """

    group_of: np.ndarray
    groups: tuple[np.ndarray, ...]
    conflicting: tuple[int, ...]
    leaked_test: np.ndarray
    leaked_train: np.ndarray
    leaked_label_mismatch: np.ndarray
    constant: np.ndarray

    def conflicting_members(self) -> np.ndarray:
        """Sorted indices of every sample in a group with conflicting labels."""
        if not self.conflicting:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate([self.groups[g] for g in self.conflicting]))

    def duplicates_summary(self) -> dict[str, int]:
        """Counts for reports and the manifest."""
        return {
            "groups": len(self.groups),
            "files": int(sum(len(g) for g in self.groups)),
            "conflicting_groups": len(self.conflicting),
            "conflicting_files": int(self.conflicting_members().size),
            "largest_group": int(max((len(g) for g in self.groups), default=0)),
            "constant_images": int(self.constant.size),
        }

    def leakage_summary(self) -> dict[str, int]:
        """Counts of test images seen in train, for reports and the manifest."""
        return {
            "test_images": int(self.leaked_test.size),
            "train_images": int(self.leaked_train.size),
            "label_mismatch": int(self.leaked_label_mismatch.size),
        }


def pixel_digests(images: np.ndarray) -> np.ndarray:
    """(N,) 16-byte BLAKE2b digests of each image's uint8 pixel bytes."""
    return np.array(
        [hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest() for image in images],
        dtype="S16",
    )


def analyse_duplicates(images: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> DuplicateAnalysis:
    """Find identical images, label conflicts among them, and train/test leakage.

    Args:
        images: (N, H, W) uint8 pixels.
        labels: (N,) class indices.
        splits: (N,) "train" or "test".

    Returns:
        The analysis, with all indices into the given arrays.
    """
    n = len(labels)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return DuplicateAnalysis(np.zeros(0, dtype=np.int64), (), (), empty, empty, empty, empty)
    _, content_id = np.unique(pixel_digests(images), return_inverse=True)
    content_id = content_id.reshape(-1)
    group_of, groups = _number_groups(content_id)
    conflicting = tuple(g for g, members in enumerate(groups) if np.unique(labels[members]).size > 1)
    leaked_test, leaked_train, mismatch = _leakage(content_id, labels, splits)
    flat = images.reshape(n, -1)
    constant = np.flatnonzero(flat.min(axis=1) == flat.max(axis=1))
    return DuplicateAnalysis(group_of, groups, conflicting, leaked_test, leaked_train, mismatch, constant)


def _number_groups(content_id: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Group numbers (-1 for unique) and member lists, numbered by first occurrence."""
    occurrences = np.bincount(content_id)
    group_of = np.full(content_id.size, -1, dtype=np.int64)
    members: dict[int, list[int]] = {}
    for index in np.flatnonzero(occurrences[content_id] > 1):
        members.setdefault(int(content_id[index]), []).append(int(index))
    groups = tuple(np.asarray(m, dtype=np.int64) for m in members.values())
    for number, group in enumerate(groups):
        group_of[group] = number
    return group_of, groups


def _leakage(content_id: np.ndarray, labels: np.ndarray, splits: np.ndarray):
    """Test samples with a train twin, train samples with a test twin, and label mismatches."""
    train = np.flatnonzero(splits == "train")
    test = np.flatnonzero(splits == "test")
    leaked_test = test[np.isin(content_id[test], content_id[train])]
    leaked_train = train[np.isin(content_id[train], content_id[test])]
    train_labels: dict[int, set[int]] = {}
    for index in leaked_train:
        train_labels.setdefault(int(content_id[index]), set()).add(int(labels[index]))
    mismatch = np.asarray(
        [i for i in leaked_test if train_labels[int(content_id[i])] - {int(labels[i])}], dtype=np.int64
    )
    return leaked_test, leaked_train, mismatch
