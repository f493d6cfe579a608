"""The ingest report (``IngestReport``, with its JSON form and the summary ``fer-pipeline
validate`` prints), the ``IngestResult`` a read returns and the ``IngestError`` it raises."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fer_pipeline.classes import CLASSES
from fer_pipeline.dataset import SPLITS, FerDataset
from fer_pipeline.errors import DatasetError
from fer_pipeline.ingest.outcomes import ACCEPTED, CONVERTED, IGNORED, REJECTED, FileIssue
from fer_pipeline.ingest.policies import IngestOptions


@dataclass
class IngestReport:
    """What an ingest read, accepted, changed and found; ``to_dict`` is JSON-able.

    ``issues`` lists every converted, rejected and ignored input (path relative to the
    source, or ``<csv>:<row>``) and ``accepted_files`` every input used as is, so
    ``inputs()`` names each input once; ``dropped`` lists accepted samples removed afterwards by
    ``duplicate_policy="drop"`` or ``drop_leakage``. ``counts`` and
    ``source_split_counts`` describe the resulting dataset; ``duplicates`` and
    ``leakage`` describe the samples as read, before any drop.
    """

    source: str
    source_format: str
    source_sha256: str
    options: IngestOptions
    given: int
    accepted: int
    issues: list[FileIssue] = field(default_factory=list)
    dropped: list[FileIssue] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    source_split_counts: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    leakage: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    accepted_files: list[str] = field(default_factory=list)  # every input used as is, sorted

    def _count(self, status: str) -> int:
        """Number of issues with one status."""
        return sum(1 for issue in self.issues if issue.status == status)

    @property
    def converted(self) -> int:
        return self._count(CONVERTED)

    @property
    def rejected(self) -> int:
        return self._count(REJECTED)

    @property
    def ignored(self) -> int:
        return self._count(IGNORED)

    @property
    def usable(self) -> bool:
        """True when no file was rejected and every class has images in both splits, i.e.
        a strict ingest accepts the source as is.

        With ``strict=False`` an ingest returns a dataset of the good files even when
        rejections make this False; ``fer-pipeline validate`` reports the source as not usable.
        """
        return self.rejected == 0 and not self.empty_classes()

    def empty_classes(self) -> list[str]:
        """``split/class`` for each class a split holds no image of after ingest."""
        return [f"{split}/{name}" for split, counts in self.counts.items() for name, n in counts.items() if n == 0]

    def inputs(self) -> list[FileIssue]:
        """Every input file (or CSV row) once, with its status and, unless accepted, the reason."""
        accepted = [FileIssue(path, ACCEPTED, "") for path in self.accepted_files]
        return sorted(accepted + self.issues, key=lambda i: i.path)

    def status_counts(self) -> dict[str, int]:
        """Inputs per status; they add up to ``given``."""
        return {
            ACCEPTED: self.accepted,
            CONVERTED: self.converted,
            REJECTED: self.rejected,
            IGNORED: self.ignored,
        }

    def files_line(self) -> str:
        """``Files: N given: ...`` with every status's count, as the summary shows it."""
        return f"Files: {self.given:,} given: " + ", ".join(f"{n:,} {s}" for s, n in self.status_counts().items())

    def to_dict(self) -> dict[str, Any]:
        """The whole report as plain JSON-able values."""
        return {
            "source": self.source,
            "source_format": self.source_format,
            "source_sha256": self.source_sha256,
            "options": dataclasses.asdict(self.options),
            "usable": self.usable,
            "files": {"given": self.given, **self.status_counts()},
            "counts": self.counts,
            "source_split_counts": self.source_split_counts,
            "duplicates": self.duplicates,
            "leakage": self.leakage,
            "issues": [dataclasses.asdict(issue) for issue in self.issues],
            "accepted_files": list(self.accepted_files),
            "dropped": [dataclasses.asdict(issue) for issue in self.dropped],
            "warnings": list(self.warnings),
        }

    def summary_text(self, max_listed: int = 20) -> str:
        """A multi-line human-readable summary, as ``fer-pipeline validate`` prints it."""
        lines = [
            f"Source: {self.source} ({self.source_format}, sha256 {self.source_sha256})",
            "",
            *_counts_table(self.counts),
            "",
            "Original usage: " + ", ".join(f"{name} {n:,}" for name, n in self.source_split_counts.items()),
            self.files_line(),
            *_ignored_breakdown(self.issues),
            *_duplicate_lines(self.duplicates, self.leakage, self.options),
        ]
        lines += _issue_lines("Rejected", [i for i in self.issues if i.status == REJECTED], max_listed)
        lines += _issue_lines("Converted", [i for i in self.issues if i.status == CONVERTED], max_listed)
        lines += _issue_lines("Dropped", self.dropped, max_listed)
        if self.warnings:
            lines += ["Warnings:", *(f"  - {w}" for w in self.warnings)]
        if self.usable:
            verdict = "yes"
        elif self.rejected:
            verdict = f"no ({self.rejected:,} file(s) rejected)"
        else:
            verdict = f"no (no images of {', '.join(self.empty_classes())})"
        lines.append(f"Usable: {verdict}")
        return "\n".join(lines)


@dataclass
class IngestResult:
    """The canonical dataset (manifest filled in) and the report of how it was made."""

    dataset: FerDataset
    report: IngestReport


class IngestError(DatasetError):
    """An ingest refused the data after reading it; ``report`` says what was found."""

    def __init__(self, message: str, report: IngestReport):
        super().__init__(message)
        self.report = report


def _counts_table(counts: dict[str, dict[str, int]]) -> list[str]:
    """Split x class table of counts with row and column totals."""
    header = ["split", *CLASSES, "total"]
    rows = [[split, *(counts[split][c] for c in CLASSES), sum(counts[split].values())] for split in SPLITS]
    rows.append(["total", *(sum(counts[s][c] for s in SPLITS) for c in CLASSES), sum(r[-1] for r in rows)])
    widths = [max(len(str(h)), *(len(f"{r[i]:,}" if i else r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [f"{v:,}".rjust(w) for v, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells))
    return lines


def _ignored_breakdown(issues: list[FileIssue]) -> list[str]:
    """One line counting ignored inputs per reason, if any."""
    reasons: dict[str, int] = {}
    for issue in issues:
        if issue.status == IGNORED:
            reasons[issue.reason] = reasons.get(issue.reason, 0) + 1
    if not reasons:
        return []
    return ["Ignored: " + ", ".join(f"{n:,} {reason}" for reason, n in sorted(reasons.items()))]


def _duplicate_lines(duplicates: dict[str, int], leakage: dict[str, int], options: IngestOptions) -> list[str]:
    """Duplicate and leakage lines of the summary."""
    return [
        f"Duplicates (identical pixels): {duplicates['groups']:,} groups, {duplicates['files']:,} files in them, "
        f"{duplicates['conflicting_groups']:,} groups with conflicting labels "
        f"({duplicates['conflicting_files']:,} files; policy {options.duplicate_policy}, "
        f"{duplicates.get('dropped', 0):,} dropped)",
        f"Blank (single-value) images: {duplicates['constant_images']:,}",
        f"Train-test leakage: {leakage['test_images']:,} test images identical to a train image, "
        f"{leakage['train_images']:,} train images involved, {leakage['label_mismatch']:,} with another label "
        f"({leakage.get('dropped', 0):,} train images dropped)",
    ]


def _issue_lines(title: str, issues: list[FileIssue], limit: int) -> list[str]:
    """A titled list of the first ``limit`` issues with reasons."""
    if not issues:
        return []
    lines = [f"{title} ({len(issues):,}):"]
    lines += [f"  {i.path}: {i.reason}" for i in issues[:limit]]
    if len(issues) > limit:
        lines.append(f"  ... and {len(issues) - limit:,} more")
    return lines
