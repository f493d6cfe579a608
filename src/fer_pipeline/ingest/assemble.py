"""From the collected samples to the canonical dataset and its report: sort by key,
analyse duplicates and leakage, apply ``strict``, ``duplicate_policy`` and
``drop_leakage``, count, warn, check every class is left, and fill in the manifest."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from fer_pipeline.classes import CLASSES, IMAGE_SIZE
from fer_pipeline.dataset import FORMAT_VERSION, SPLITS, FerDataset, class_counts
from fer_pipeline.ingest.outcomes import MAX_LISTED, REJECTED, SOURCE_SPLITS, USAGE_TO_SPLIT, FileIssue, _Collected
from fer_pipeline.ingest.policies import IngestOptions
from fer_pipeline.ingest.report import IngestError, IngestReport, IngestResult
from fer_pipeline.quality import DuplicateAnalysis, analyse_duplicates


def _finish(
    path: Path, source_format: str, checksum: str, collected: _Collected, options: IngestOptions
) -> IngestResult:
    """Sort, analyse duplicates, apply the policies, check and build dataset and report."""
    dataset = _sorted_dataset(collected)
    analysis = analyse_duplicates(dataset.images, dataset.labels, dataset.splits)
    report = IngestReport(
        source=path.name,
        source_format=source_format,
        source_sha256=checksum,
        options=options,
        given=collected.given,
        accepted=collected.accepted,
        issues=sorted(collected.issues, key=lambda i: (i.status, i.path)),
        duplicates=analysis.duplicates_summary(),
        leakage=analysis.leakage_summary(),
        warnings=list(collected.warnings),
        accepted_files=sorted(collected.accepted_names),
    )
    _fill_counts(report, dataset)  # so that the report attached to an IngestError is complete
    _check_strict(report, options)
    dataset = _apply_policies(dataset, analysis, options, report)
    _fill_counts(report, dataset)
    report.warnings += _data_warnings(dataset, report, options)
    _check_every_class_present(report)
    dataset.manifest = _manifest(dataset, report)
    return IngestResult(dataset, report)


def _sorted_dataset(collected: _Collected) -> FerDataset:
    """Arrays of the collected samples, sorted by key."""
    keys = np.asarray(collected.keys, dtype=str)
    order = np.argsort(keys, kind="stable")
    if collected.images:
        images = np.stack([collected.images[i] for i in order])
    else:
        images = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    return FerDataset(
        images=images,
        labels=np.asarray(collected.labels, dtype=np.uint8)[order],
        splits=np.asarray(collected.splits, dtype="U5")[order],
        source_splits=np.asarray(collected.source_splits, dtype="U11")[order],
        keys=keys[order],
    )


def _check_strict(report: IngestReport, options: IngestOptions) -> None:
    """Under ``strict``, fail on any rejected file, quoting the first few."""
    rejected = [i for i in report.issues if i.status == REJECTED]
    if not rejected or not options.strict:
        return
    listed = "; ".join(f"{i.path}: {i.reason}" for i in rejected[:MAX_LISTED])
    more = f" (and {len(rejected) - MAX_LISTED} more)" if len(rejected) > MAX_LISTED else ""
    raise IngestError(
        f"{len(rejected)} file(s) in {report.source} cannot be used: {listed}{more}. "
        "Fix or remove them (`fer-pipeline validate --quarantine` lists every one).",
        report,
    )


def _apply_policies(
    dataset: FerDataset, analysis: DuplicateAnalysis, options: IngestOptions, report: IngestReport
) -> FerDataset:
    """Apply duplicate_policy and drop_leakage; record dropped samples in the report."""
    drop = np.zeros(len(dataset), dtype=bool)
    conflicting = analysis.conflicting_members()
    if conflicting.size and options.duplicate_policy == "fail":
        raise IngestError(_conflict_message(dataset, analysis, report.source), report)
    if options.duplicate_policy == "drop":
        drop[conflicting] = True
        report.dropped += [
            FileIssue(str(dataset.keys[i]), "dropped", "identical image with another label (duplicate_policy=drop)")
            for i in conflicting
        ]
    report.duplicates["dropped"] = int(drop.sum())
    report.leakage["dropped"] = 0
    if options.drop_leakage:
        # Recomputed on what is left: a conflicting group may already be gone.
        kept = np.flatnonzero(~drop)
        left = analyse_duplicates(dataset.images[kept], dataset.labels[kept], dataset.splits[kept])
        leaked = kept[left.leaked_train]
        drop[leaked] = True
        report.dropped += [
            FileIssue(str(dataset.keys[i]), "dropped", "train image identical to a test image (drop_leakage)")
            for i in leaked
        ]
        report.leakage["dropped"] = int(leaked.size)
    return dataset.subset(np.flatnonzero(~drop)) if drop.any() else dataset


def _conflict_message(dataset: FerDataset, analysis: DuplicateAnalysis, source: str) -> str:
    """DatasetError text for duplicate_policy="fail", quoting the first groups."""
    examples = []
    for group in analysis.conflicting[:MAX_LISTED]:
        members = analysis.groups[group]
        examples.append(" = ".join(f"{dataset.keys[i]} ({CLASSES[dataset.labels[i]]})" for i in members))
    return (
        f"{len(analysis.conflicting)} group(s) of identical images in {source} carry different labels, e.g. "
        + "; ".join(examples)
        + ". Use duplicate_policy='drop' to remove them or 'keep' to keep them."
    )


def _check_every_class_present(report: IngestReport) -> None:
    """Fail when a split or a class ended up with no samples (all rejected or dropped)."""
    if empty := report.empty_classes():
        raise IngestError(
            f"{report.source} leaves no usable images for {', '.join(empty)} after ingest; every class needs "
            "images in both train and test. Add or fix images there, or drop fewer (duplicate_policy, "
            "drop_leakage).",
            report,
        )


def _fill_counts(report: IngestReport, dataset: FerDataset) -> None:
    """Set the report's split x class and original-usage counts from the dataset."""
    report.counts = _split_class_counts(dataset)
    report.source_split_counts = _source_split_counts(dataset)


def _split_class_counts(dataset: FerDataset) -> dict[str, dict[str, int]]:
    """{split: {class: n}} with every class, zeros included."""
    return {split: class_counts(dataset.labels[dataset.splits == split]) for split in SPLITS}


def _source_split_counts(dataset: FerDataset) -> dict[str, int]:
    """Samples per original Usage; "unknown" only when some have none."""
    counts = {name: int(np.sum(dataset.source_splits == name)) for name in SOURCE_SPLITS}
    unknown = int(np.sum(dataset.source_splits == ""))
    if unknown:
        counts["unknown"] = unknown
    return counts


def _data_warnings(dataset: FerDataset, report: IngestReport, options: IngestOptions) -> list[str]:
    """Warnings about what the data holds and what the options did with it."""
    found = []
    unknown = report.source_split_counts.get("unknown", 0)
    if unknown:
        found.append(
            f"{unknown} sample(s) have no Training_/PublicTest_/PrivateTest_ name prefix; original usage unknown"
        )
    expected_split = np.array([USAGE_TO_SPLIT.get(u, s) for u, s in zip(dataset.source_splits, dataset.splits)])
    misplaced = int(np.sum(expected_split != dataset.splits))
    if misplaced:
        found.append(f"{misplaced} sample(s) sit in a split their name prefix contradicts (e.g. Training_* in test/)")
    if report.rejected and not options.strict:
        found.append(f"{report.rejected} file(s) rejected and left out (strict=False)")
    if report.converted:
        found.append(f"{report.converted} file(s) converted to {IMAGE_SIZE}x{IMAGE_SIZE} grayscale")
    dup = report.duplicates
    if dup["conflicting_groups"] and options.duplicate_policy == "keep":
        found.append(
            f"{dup['conflicting_groups']} group(s) of identical images carry different labels "
            f"({dup['conflicting_files']} files, kept; duplicate_policy='drop' removes them)"
        )
    if report.leakage["test_images"] and not options.drop_leakage:
        found.append(
            f"{report.leakage['test_images']} test image(s) are identical to train images "
            "(kept; drop_leakage=True drops the train copies)"
        )
    if dup["constant_images"]:
        found.append(f"{dup['constant_images']} blank (single-value) image(s)")
    return found


def _manifest(dataset: FerDataset, report: IngestReport) -> dict[str, Any]:
    """The canonical dataset's manifest.json content."""
    return {
        "format_version": FORMAT_VERSION,
        "source": report.source,
        "source_sha256": report.source_sha256,
        "source_format": report.source_format,
        "image_size": IMAGE_SIZE,
        "classes": list(CLASSES),
        "num_samples": len(dataset),
        "counts": report.counts,
        "source_split_counts": report.source_split_counts,
        "duplicates": dict(report.duplicates),
        "leakage": dict(report.leakage),
        "ingest": {**report.status_counts(), "dropped": len(report.dropped)},
        "options": dataclasses.asdict(report.options),
    }
