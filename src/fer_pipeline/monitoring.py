"""Drift between a prediction log and the training set the model learnt from.

Compared, each with the population stability index (PSI):
  - ``predicted class``: the live mix of predicted classes against the training labels' mix
    (the seven classes are the bins);
  - ``brightness`` and ``contrast``: each crop's mean and standard deviation (gray levels)
    against the training images', in ten bins cut at the training deciles (fixed by the
    reference, so every log is measured on the same bins).

PSI = sum over bins of (live - reference) * ln(live / reference), with each bin's share
smoothed by half a count so an empty bin does not make it infinite. It decides drift
(default: > 0.2 drift, 0.1..0.2 watch) because it measures how far apart the two mixes
are whatever the number of faces; a test's p-value falls with the sample size, so on a
busy log it flags shifts too small to matter. The two-sample Kolmogorov-Smirnov test
(brightness, contrast) and the chi-square goodness-of-fit test (classes) are reported
beside it, as a second opinion that says whether a shift could be chance.

Face size and confidence have no counterpart in the training set (its crops are all
48 px, and it has labels, not predictions): they are summarised, not compared. Under
``min_faces`` faces the estimate is marked unreliable and nothing is called drift.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fer_pipeline.classes import CLASSES, IMAGE_SIZE
from fer_pipeline.dataset import MANIFEST_FILE, FerDataset
from fer_pipeline.errors import ConfigError
from fer_pipeline.prediction_log import image_stats

N_BINS = 10
SMOOTHING = 0.5  # counts added to every bin (Jeffreys prior): empty bins stay finite
# With 10 bins, N * PSI of two samples of one population is roughly chi-square with 9
# degrees of freedom: its 95th percentile (16.9) / 200 faces = 0.085, under the watch line.
MIN_FACES = 200
CONTINUOUS = ("brightness", "contrast")
CLASS_FEATURE = "predicted class"


@dataclass(frozen=True)
class Thresholds:
    """PSI above ``drift`` is drift, above ``watch`` worth watching; fewer than
    ``min_faces`` faces make the estimate unreliable."""

    watch: float = 0.1
    drift: float = 0.2
    min_faces: int = MIN_FACES

    def __post_init__(self) -> None:
        if not 0 < self.watch <= self.drift < math.inf:  # an infinite drift threshold could never be crossed
            raise ConfigError(f"need 0 < watch <= drift, both finite, got watch {self.watch}, drift {self.drift}")
        if self.min_faces < 1:
            raise ConfigError(f"min_faces must be at least 1, got {self.min_faces}")

    def status(self, psi: float) -> str:
        return "drift" if psi > self.drift else "watch" if psi > self.watch else "ok"


@dataclass(frozen=True)
class Sample:
    """One population's features: per face brightness and contrast, and class indices
    (training labels for the reference, predicted classes for the log)."""

    brightness: np.ndarray
    contrast: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(self.classes.shape[0])


@dataclass
class FeatureDrift:
    name: str
    psi: float
    status: str
    test: str  # "KS" or "chi-square"
    statistic: float
    p_value: float
    reference_mean: float | None = None  # continuous features only
    live_mean: float | None = None
    shares: dict[str, dict[str, float]] | None = None  # the class mix: {class: {reference, live}}


@dataclass
class DriftReport:
    faces: int
    reference_faces: int
    reliable: bool
    features: list[FeatureDrift]
    thresholds: Thresholds
    summary: dict[str, Any] = field(default_factory=dict)  # what is not compared (face size, confidence)
    notes: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        """The features that drifted (none when the estimate is unreliable: their status says so)."""
        return [f.name for f in self.features if f.status == "drift"]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["drifted"] = self.drifted
        return data


# ---- the two populations ---------------------------------------------------------------


def reference_from_dataset(dataset: FerDataset, split: str = "train") -> Sample:
    """The training images' features (the model's reference population)."""
    index = dataset.indices(split)
    if index.size == 0:
        raise ConfigError(f"the reference dataset has no {split!r} images")
    brightness, contrast = image_stats(dataset.images[index])
    return Sample(brightness, contrast, dataset.labels[index].astype(np.int64))


def load_reference_dataset(path: str | Path) -> FerDataset:
    """A canonical dataset folder (from ``ingest``; or its ``gs://`` prefix), or any source
    ``read_source`` reads (Kaggle zip, folder, fer2013.csv). DatasetError names the path
    when it is neither."""
    if str(path).startswith("gs://"):
        from fer_pipeline.steps import load_dataset

        return load_dataset(str(path))
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return FerDataset.load(path)
    from fer_pipeline.ingest import IngestOptions, read_source

    # Quarantine, not strict: a few bad files must not stop a comparison of thousands.
    return read_source(path, IngestOptions(strict=False)).dataset


def sample_from_records(records: Sequence[dict[str, Any]]) -> Sample:
    """The log's features, from ``prediction_log.read_log``'s checked records."""
    return Sample(
        np.array([r["brightness"] for r in records], dtype=np.float64),
        np.array([r["contrast"] for r in records], dtype=np.float64),
        np.array([CLASSES.index(r["predicted"]) for r in records], dtype=np.int64),
    )


# ---- PSI -------------------------------------------------------------------------------


def decile_edges(reference: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (ties merged); the outer bins are open."""
    return np.unique(np.quantile(reference, np.linspace(0, 1, n_bins + 1)[1:-1]))


def binned_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)


def psi(reference_counts: np.ndarray, live_counts: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins (smoothed shares)."""
    expected = _shares(reference_counts)
    actual = _shares(live_counts)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _shares(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64) + SMOOTHING
    return counts / counts.sum()


# ---- comparing -------------------------------------------------------------------------


def compare(reference: Sample, live: Sample, thresholds: Thresholds = Thresholds()) -> DriftReport:
    """Each feature's PSI, status and test of ``live`` against ``reference``."""
    features = [
        continuous_drift(name, getattr(reference, name), getattr(live, name), thresholds) for name in CONTINUOUS
    ]
    features.append(class_mix_drift(reference.classes, live.classes, thresholds))
    reliable = len(live) >= thresholds.min_faces
    notes = []
    if not reliable:  # each feature's PSI stays on show, but no status: nothing is called drift or watch
        features = [replace(feature, status="unreliable") for feature in features]
        faces = f"{len(live)} face{'' if len(live) == 1 else 's'}"
        notes.append(f"only {faces} (< {thresholds.min_faces}): the estimate is unreliable")
    return DriftReport(len(live), len(reference), reliable, features, thresholds, notes=notes)


def continuous_drift(name: str, reference: np.ndarray, live: np.ndarray, thresholds: Thresholds) -> FeatureDrift:
    from scipy.stats import ks_2samp

    edges = decile_edges(reference)
    value = psi(binned_counts(reference, edges), binned_counts(live, edges))
    test = ks_2samp(reference, live)
    return FeatureDrift(
        name,
        value,
        thresholds.status(value),
        "KS",
        float(test.statistic),
        float(test.pvalue),
        reference_mean=float(reference.mean()),
        live_mean=float(live.mean()),
    )


def class_mix_drift(reference: np.ndarray, live: np.ndarray, thresholds: Thresholds) -> FeatureDrift:
    from scipy.stats import chisquare

    reference_counts = np.bincount(reference, minlength=len(CLASSES))
    live_counts = np.bincount(live, minlength=len(CLASSES))
    value = psi(reference_counts, live_counts)
    test = chisquare(live_counts, _shares(reference_counts) * live_counts.sum())
    shares = {
        name: {"reference": float(r), "live": float(a)}
        for name, r, a in zip(CLASSES, reference_counts / reference_counts.sum(), live_counts / live_counts.sum())
    }
    return FeatureDrift(
        CLASS_FEATURE,
        value,
        thresholds.status(value),
        "chi-square",
        float(test.statistic),
        float(test.pvalue),
        shares=shares,
    )


def live_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the log says that the training set cannot be compared with."""
    sizes = np.array([r["face_size"] for r in records if r["face_size"] is not None], dtype=np.float64)
    confidence = np.array([r["confidence"] for r in records], dtype=np.float64)
    return {
        "model_versions": dict(Counter(str(r["model_version"]) for r in records).most_common()),
        "mean_confidence": float(confidence.mean()),
        "faces_with_size": int(sizes.size),
        "median_face_size": float(np.median(sizes)) if sizes.size else None,
        # Smaller than the training crops: the model sees an upscaled, blurrier face.
        "share_under_48px": float(np.mean(sizes < IMAGE_SIZE)) if sizes.size else None,
    }


def compare_log(records: Sequence[dict[str, Any]], reference: Sample, thresholds: Thresholds) -> DriftReport:
    """``compare`` for a log's records, with the summary of what is not compared."""
    report = compare(reference, sample_from_records(records), thresholds)
    report.summary = live_summary(records)
    return report


# ---- the table -------------------------------------------------------------------------


def format_report(report: DriftReport) -> str:
    """A plain-text table: one row per feature, the class mix, the summary, the verdict."""
    lines = [f"{report.faces:,} logged faces against {report.reference_faces:,} training images"]
    lines += [f"note: {note}" for note in report.notes]
    lines.append(f"{'FEATURE':<16} {'PSI':>7}  {'STATUS':<6} {'REFERENCE':>9} {'LIVE':>7}  TEST")
    for f in report.features:
        ref = "-" if f.reference_mean is None else f"{f.reference_mean:.1f}"
        live = "-" if f.live_mean is None else f"{f.live_mean:.1f}"
        test = f"{f.test} {f.statistic:.3g}, p={f.p_value:.2g}"
        lines.append(f"{f.name:<16} {f.psi:>7.3f}  {f.status:<6} {ref:>9} {live:>7}  {test}")
    lines += _class_mix_lines(report)
    lines += _summary_lines(report.summary)
    lines.append(_verdict(report))
    return "\n".join(lines)


def _class_mix_lines(report: DriftReport) -> list[str]:
    mix = next((f.shares for f in report.features if f.shares), None)
    if not mix:
        return []
    lines = ["class mix (training labels -> predictions):"]
    lines += [f"  {name:<9} {s['reference']:6.1%} -> {s['live']:6.1%}" for name, s in mix.items()]
    return lines


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    if not summary:
        return []
    versions = ", ".join(f"{v} ({n})" for v, n in summary["model_versions"].items())
    lines = [f"model versions: {versions}", f"mean confidence: {summary['mean_confidence']:.3f} (not compared)"]
    if summary["median_face_size"] is not None:
        lines.append(
            f"face size: median {summary['median_face_size']:.0f} px, {summary['share_under_48px']:.1%} under 48 px "
            "(not compared: the training crops are all 48 px)"
        )
    return lines


def _verdict(report: DriftReport) -> str:
    t = report.thresholds
    rule = f"PSI > {t.drift:g} drift, > {t.watch:g} watch"
    if not report.reliable:
        return f"verdict: unreliable (too few faces; {rule})"
    if report.drifted:
        return f"verdict: DRIFT in {', '.join(report.drifted)} ({rule})"
    watched = [f.name for f in report.features if f.status == "watch"]
    return f"verdict: watch {', '.join(watched)} ({rule})" if watched else f"verdict: no drift ({rule})"
