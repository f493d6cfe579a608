"""Evaluation on the test split: metrics, plots, the HTML report and a Vertex AI
ModelEvaluation-shaped summary.

Writes, under ``out_dir``:
  - ``metrics.json``: everything ``evaluate`` returns;
  - ``plots/history.png``, ``plots/confusion_matrix.png``, ``plots/roc.png``;
  - ``report.html``: self-contained, the plots embedded, the model card as a section;
  - ``model_card.md``: the model card (``fer_pipeline.model_card``), registered with the model;
  - ``vertex_evaluation.json``: ``{"metrics_schema_uri", "metrics"}`` for the
    classification schema, ready for a registration step to import.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sklearn import metrics as skm

from fer_pipeline import plots as plotting
from fer_pipeline.classes import CLASSES, NUM_CLASSES
from fer_pipeline.dataset import FerDataset, class_counts
from fer_pipeline.errors import DatasetError
from fer_pipeline.files import write_json
from fer_pipeline.model import float32_copy, load_model
from fer_pipeline.model_card import MODEL_CARD_FILE, build_card, to_markdown
from fer_pipeline.report import render_report
from fer_pipeline.tf_data import make_dataset

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
VERTEX_FILE = "vertex_evaluation.json"
PLOTS_DIR = "plots"
VERTEX_CLASSIFICATION_SCHEMA = "gs://google-cloud-aiplatform/schema/modelevaluation/classification_metrics_1.0.0.yaml"
SOURCE_SPLITS = ("PublicTest", "PrivateTest")
MAX_ROC_POINTS = 200
PREDICT_BATCH = 256  # images per inference batch
# Vertex's confidence thresholds: 0.00, 0.05, ..., 0.95, then 0.96 ... 0.99.
CONFIDENCE_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20)) + (0.96, 0.97, 0.98, 0.99)


def evaluate(
    model_path: Path,
    dataset: FerDataset,
    out_dir: Path,
    *,
    histories: list[dict] | None = None,
    run_info: dict | None = None,
) -> dict:
    """Evaluate a saved model on the dataset's "test" split and write all outputs.

    Args:
        model_path: A ``model.keras`` from training.
        dataset: The canonical dataset; only its "test" rows are used.
        out_dir: Output directory (created); see the module docstring for its files.
        histories: The phases' history.json contents (or bare Keras histories), in
            order, for the history plot; None draws an empty plot.
        run_info: Run parameters shown in the report (e.g. the training config).

    Returns:
        The metrics dict written to metrics.json.

    Raises:
        DatasetError: The dataset has no "test" rows.
    """
    out_dir = Path(out_dir)
    test = dataset.subset(dataset.indices("test"))
    if len(test) == 0:
        raise DatasetError(
            'The dataset has no "test" split rows to evaluate on; re-run ingest with a source that has a test split.'
        )
    model = float32_copy(load_model(model_path))  # what export ships: float32 whatever the training policy
    probabilities = predict_probabilities(model, test.images)
    metrics = compute_metrics(test.labels, probabilities, test.source_splits)
    logger.info(
        "Test accuracy %.4f, macro-F1 %.4f, macro ROC-AUC %s on %d images.",
        metrics["accuracy"],
        metrics["macro_f1"],
        "n/a" if metrics["macro_roc_auc"] is None else f"{metrics['macro_roc_auc']:.4f}",
        len(test),
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    # Strict JSON: NaN is not allowed (every undefined value is already None).
    write_json(out_dir / METRICS_FILE, metrics, strict=True)
    plot_paths = write_plots(metrics, histories or [], out_dir / PLOTS_DIR)
    summary = dataset_summary(dataset)
    card = build_card(metrics, run_info, summary)  # one card: the registered file and the report's section
    (out_dir / MODEL_CARD_FILE).write_text(to_markdown(card), encoding="utf-8")
    render_report(
        metrics,
        plot_paths,
        out_dir / REPORT_FILE,
        dataset_summary=summary,
        run_info=run_info,
        model_card=card,
    )
    write_json(out_dir / VERTEX_FILE, vertex_evaluation(metrics, test.labels, probabilities), strict=True)
    return metrics


def predict_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, 7) for uint8 images (N, 48, 48), augmentation off.

    Batches are run eagerly: for a test set of a few dozen batches that is faster
    than tracing DenseNet169 into a graph, which ``model.predict`` would do.
    """
    batches = make_dataset(images, np.zeros(len(images), np.int32), PREDICT_BATCH, shuffle=False, seed=0)
    outputs = [keras.ops.convert_to_numpy(model(x, training=False)) for x, _ in batches]
    return np.concatenate(outputs).astype(np.float64)


def _scored_classes(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Which classes have an F1: those in the test labels or predicted. A class in neither
    (a test set without disgust, say) has nothing to score: its precision, recall and F1
    are None and macro-F1 averages the others, where sklearn would count it as 0."""
    present = np.zeros(NUM_CLASSES, dtype=bool)
    present[np.unique(labels)] = True
    present[np.unique(predicted)] = True
    return present


def compute_metrics(labels: np.ndarray, probabilities: np.ndarray, source_splits: np.ndarray | None = None) -> dict:
    """All test metrics from true labels and predicted probabilities.

    Args:
        labels: (N,) true class indices.
        probabilities: (N, 7) predicted probabilities.
        source_splits: (N,) FER-2013 Usage per image ("PublicTest", "PrivateTest", ...).

    Returns:
        A JSON-ready dict: ``accuracy``, ``macro_f1``, ``weighted_f1``, ``log_loss``,
        ``macro_roc_auc`` (mean of the per-class one-vs-rest AUCs that are defined: a class
        needs test images in it and out of it) and ``macro_roc_auc_classes``,
        ``macro_f1_classes`` (how many classes macro-F1 averages: those in the labels or
        predicted), ``micro_roc_auc`` and ``micro_average_precision`` (all labels one-hot and
        flattened, as Vertex defines auRoc/auPrc), ``confusion_matrix`` (counts, rows
        true), ``per_class`` {class: precision, recall, f1, support, roc_auc},
        ``roc_curves`` {class or "micro": fpr, tpr, thresholds; at most 200 points,
        sklearn's leading +inf threshold stored as 1.0}, ``public_test_accuracy`` and
        ``private_test_accuracy`` (None where the split is absent),
        ``source_split_counts``, ``num_test_samples`` and ``classes``. Undefined values
        are None.
    """
    labels = labels.astype(np.int64)
    predicted = probabilities.argmax(axis=1)
    every = list(range(NUM_CLASSES))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=every, zero_division=0
    )
    scored = _scored_classes(labels, predicted)
    curves, aucs = {}, {}
    for k, name in enumerate(CLASSES):
        aucs[name], curves[name] = _one_vs_rest_roc(labels == k, probabilities[:, k])
    defined = [a for a in aucs.values() if a is not None]
    onehot = np.eye(NUM_CLASSES, dtype=bool)[labels]
    micro_auc, curves["micro"] = _one_vs_rest_roc(onehot.ravel(), probabilities.ravel())
    by_source = _accuracy_by_source(labels, predicted, source_splits)
    return {
        "classes": list(CLASSES),
        "num_test_samples": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "macro_f1": float(np.mean(f1[scored])) if scored.any() else None,
        "macro_f1_classes": int(scored.sum()),
        "weighted_f1": float(skm.f1_score(labels, predicted, labels=every, average="weighted", zero_division=0)),
        "log_loss": float(skm.log_loss(labels, _clipped(probabilities), labels=every)),
        "macro_roc_auc": float(np.mean(defined)) if defined else None,
        "macro_roc_auc_classes": len(defined),
        "micro_roc_auc": micro_auc,
        "micro_average_precision": _safe(skm.average_precision_score, onehot.ravel(), probabilities.ravel()),
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=every).tolist(),
        "per_class": {
            name: {
                "precision": float(precision[k]) if scored[k] else None,
                "recall": float(recall[k]) if support[k] else None,
                "f1": float(f1[k]) if scored[k] else None,
                "support": int(support[k]),
                "roc_auc": aucs[name],
            }
            for k, name in enumerate(CLASSES)
        },
        "roc_curves": curves,
        "public_test_accuracy": by_source.get("PublicTest", (None, 0))[0],
        "private_test_accuracy": by_source.get("PrivateTest", (None, 0))[0],
        "source_split_counts": {name: count for name, (_, count) in by_source.items()},
    }


def write_plots(metrics: dict, histories: list[dict], plots_dir: Path) -> dict[str, Path]:
    """Write history.png, confusion_matrix.png and roc.png; returns name -> path."""
    aucs = {name: values["roc_auc"] for name, values in metrics["per_class"].items()}
    aucs["micro"] = metrics["micro_roc_auc"]
    return {
        "history": plotting.plot_history(histories, plots_dir / "history.png"),
        "confusion_matrix": plotting.plot_confusion_matrix(
            metrics["confusion_matrix"], metrics["classes"], plots_dir / "confusion_matrix.png"
        ),
        "roc": plotting.plot_roc_curves(metrics["roc_curves"], aucs, plots_dir / "roc.png"),
    }


def vertex_evaluation(metrics: dict, labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """A Vertex AI ModelEvaluation for the classification metrics schema.

    Args:
        metrics: The dict from ``compute_metrics``.
        labels: (N,) true class indices.
        probabilities: (N, 7) predicted probabilities.

    Returns:
        {"metrics_schema_uri", "metrics": {auPrc, auRoc, logLoss (micro-averaged, as
        Vertex defines them; omitted where undefined), confusionMatrix
        {annotationSpecs: [{displayName}], rows}, confidenceMetrics}}.
    """
    values = {
        "auPrc": metrics.get("micro_average_precision"),
        "auRoc": metrics.get("micro_roc_auc"),
        "logLoss": metrics.get("log_loss"),
    }
    body: dict[str, Any] = {key: value for key, value in values.items() if value is not None}
    body["confusionMatrix"] = {
        # displayName only: the ids would be Vertex-assigned annotation spec ids, which a custom model has none of.
        "annotationSpecs": [{"displayName": name} for name in metrics["classes"]],
        "rows": metrics["confusion_matrix"],
    }
    body["confidenceMetrics"] = confidence_metrics(labels, probabilities)
    return {"metrics_schema_uri": VERTEX_CLASSIFICATION_SCHEMA, "metrics": body}


def confidence_metrics(labels: np.ndarray, probabilities: np.ndarray) -> list[dict]:
    """Micro-averaged precision/recall/FPR/F1 at Vertex's confidence thresholds, all labels and top-1."""
    labels = labels.astype(np.int64)
    truth = np.eye(probabilities.shape[1], dtype=bool)[labels]
    negatives = truth.size - truth.sum()
    top = probabilities.argmax(axis=1)
    top_score = probabilities[np.arange(len(labels)), top]
    top_correct = top == labels
    entries = []
    for threshold in CONFIDENCE_THRESHOLDS:
        chosen = probabilities >= threshold
        tp = int((chosen & truth).sum())
        fp = int((chosen & ~truth).sum())
        tp1 = int((top_correct & (top_score >= threshold)).sum())
        fp1 = int((~top_correct & (top_score >= threshold)).sum())
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, truth.sum())
        precision1, recall1 = _ratio(tp1, tp1 + fp1), _ratio(tp1, len(labels))
        entries.append(
            {
                "confidenceThreshold": threshold,
                "precision": precision,
                "recall": recall,
                "falsePositiveRate": _ratio(fp, negatives),
                "f1Score": _harmonic(precision, recall),
                "precisionAt1": precision1,
                "recallAt1": recall1,
                "falsePositiveRateAt1": _ratio(fp1, negatives),
                "f1ScoreAt1": _harmonic(precision1, recall1),
                "truePositiveCount": str(tp),  # int64 fields are strings in the proto JSON mapping
                "falsePositiveCount": str(fp),
            }
        )
    return entries


def dataset_summary(dataset: FerDataset) -> dict[str, Any]:
    """Counts for the report: images per split, per class, per source split, and the source."""
    summary: dict[str, Any] = {"images": len(dataset)}
    for split in ("train", "test"):
        index = dataset.indices(split)
        summary[f"{split} images"] = int(len(index))
        summary[f"{split} per class"] = class_counts(dataset.labels[index])
    sources, counts = np.unique(dataset.source_splits.astype(str), return_counts=True)
    summary["source splits"] = {str(s) or "unknown": int(c) for s, c in zip(sources, counts)}
    # Identical images (and with conflicting labels), and test images also in train.
    for key in ("duplicates", "leakage"):
        if isinstance(dataset.manifest.get(key), dict):
            summary[key] = dict(dataset.manifest[key])
    # The manifest's scalar entries (source, checksum, format version, ...) as they are.
    for key, value in dataset.manifest.items():
        if isinstance(value, (str, int, float, bool)):
            summary[f"manifest {key}"] = value
    return summary


def _one_vs_rest_roc(positive: np.ndarray, scores: np.ndarray) -> tuple[float | None, dict[str, list]]:
    """(ROC-AUC or None, downsampled curve) of one binary problem; undefined without both outcomes."""
    if positive.all() or not positive.any():
        return None, {"fpr": [], "tpr": [], "thresholds": []}
    fpr, tpr, thresholds = skm.roc_curve(positive, scores)
    keep = _downsample(len(fpr), MAX_ROC_POINTS)
    curve = {
        "fpr": [float(v) for v in fpr[keep]],
        "tpr": [float(v) for v in tpr[keep]],
        # sklearn's first threshold is +inf ("predict nothing"): 1.0, the top score, keeps JSON strict.
        "thresholds": [float(min(v, 1.0)) for v in thresholds[keep]],
    }
    return float(skm.roc_auc_score(positive, scores)), curve


def _downsample(n: int, most: int) -> np.ndarray:
    """At most ``most`` evenly spread indices of ``n``, first and last included."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.int64))


def _accuracy_by_source(
    labels: np.ndarray, predicted: np.ndarray, source_splits: np.ndarray | None
) -> dict[str, tuple[float, int]]:
    """Accuracy and count on each FER-2013 test source split present."""
    if source_splits is None:
        return {}
    sources = source_splits.astype(str)
    result = {}
    for name in SOURCE_SPLITS:
        mask = sources == name
        if mask.any():
            result[name] = (float((labels[mask] == predicted[mask]).mean()), int(mask.sum()))
    return result


def _safe(metric, *args) -> float | None:
    """A scikit-learn score, or None where it is undefined (e.g. a single class)."""
    try:
        value = float(metric(*args))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _clipped(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities kept off 0 (a finite log loss) and renormalised to sum to 1."""
    clipped = np.clip(probabilities, 1e-7, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0 for an empty denominator."""
    return float(numerator / denominator) if denominator else 0.0


def _harmonic(a: float, b: float) -> float:
    """Harmonic mean (F1) of two rates, 0 when both are 0."""
    return 2 * a * b / (a + b) if a + b else 0.0
