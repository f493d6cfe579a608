"""Evaluation: metrics consistency, plots, the Vertex evaluation file, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fer_pipeline import evaluate as ev
from fer_pipeline import synthetic
from fer_pipeline.classes import CLASSES, NUM_CLASSES
from fer_pipeline.config import TrainConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.errors import DatasetError
from fer_pipeline.model import build_model

VERTEX_METRIC_KEYS = {"auPrc", "auRoc", "logLoss", "confusionMatrix", "confidenceMetrics"}


def _dataset(n_train: int = 3, n_test: int = 6) -> FerDataset:
    train_x, train_y = synthetic.make_images(n_train, seed=0)
    test_x, test_y = synthetic.make_images(n_test, seed=1)
    n_tr, n_te = len(train_y), len(test_y)
    return FerDataset(
        images=np.concatenate([train_x, test_x]),
        labels=np.concatenate([train_y, test_y]),
        splits=np.array(["train"] * n_tr + ["test"] * n_te),
        source_splits=np.array(["Training"] * n_tr + ["PublicTest", "PrivateTest"] * (n_te // 2)),
        keys=np.array([f"k{i}" for i in range(n_tr + n_te)]),
        manifest={"format_version": 1, "source": "generated <test>"},
    )


def _history(phase: str, epochs: int, start: float) -> dict:
    losses = [start - 0.1 * i for i in range(epochs)]
    return {
        "phase": phase,
        "history": {
            "loss": losses,
            "val_loss": [v + 0.05 for v in losses],
            "accuracy": [0.3 + 0.05 * i for i in range(epochs)],
            "val_accuracy": [0.25 + 0.05 * i for i in range(epochs)],
            "learning_rate": [1e-4] * epochs,
        },
    }


def _random_probabilities(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    logits = rng.normal(size=(n, NUM_CLASSES)) + 2.0 * np.eye(NUM_CLASSES)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities


def _check_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


def test_evaluate_writes_consistent_metrics_plots_report_and_vertex_file(tmp_path):
    dataset = _dataset()
    model_path = tmp_path / "model.keras"
    build_model(TrainConfig(weights="none", dense_units=(8,), dropouts=(0.1,))).save(model_path)
    out = tmp_path / "eval"

    metrics = ev.evaluate(
        model_path,
        dataset,
        out,
        histories=[_history("frozen", 3, 1.9), _history("finetune", 2, 1.5)],
        run_info={"frozen_epochs": 3, "note": "<b>unescaped?</b>"},
    )

    assert json.loads((out / "metrics.json").read_text()) == metrics
    matrix = np.array(metrics["confusion_matrix"])
    n_test = len(dataset.indices("test"))
    assert matrix.shape == (NUM_CLASSES, NUM_CLASSES) and matrix.sum() == n_test == metrics["num_test_samples"]
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert sum(c["support"] for c in metrics["per_class"].values()) == n_test
    assert list(metrics["per_class"]) == list(CLASSES)
    assert set(metrics["roc_curves"]) == set(CLASSES) | {"micro"}
    for curve in metrics["roc_curves"].values():
        assert 0 < len(curve["fpr"]) == len(curve["tpr"]) == len(curve["thresholds"]) <= ev.MAX_ROC_POINTS
    for key, source in (("public_test_accuracy", "PublicTest"), ("private_test_accuracy", "PrivateTest")):
        rows = dataset.source_splits[dataset.indices("test")] == source
        assert 0.0 <= metrics[key] <= 1.0 and metrics["source_split_counts"][source] == rows.sum()
    assert sum(metrics["source_split_counts"].values()) == n_test

    for name in ("history", "confusion_matrix", "roc"):
        _check_png(out / "plots" / f"{name}.png")

    vertex = json.loads((out / "vertex_evaluation.json").read_text())
    assert vertex["metrics_schema_uri"] == ev.VERTEX_CLASSIFICATION_SCHEMA
    assert VERTEX_METRIC_KEYS <= set(vertex["metrics"])
    confusion = vertex["metrics"]["confusionMatrix"]
    assert [spec["displayName"] for spec in confusion["annotationSpecs"]] == list(CLASSES)
    assert confusion["rows"] == metrics["confusion_matrix"]

    report = (out / "report.html").read_text()
    assert report.count('<tr class="class-row">') == NUM_CLASSES
    assert report.count('src="data:image/png;base64,') == 3
    assert "<b>unescaped?</b>" not in report and "&lt;b&gt;unescaped?&lt;/b&gt;" in report
    card = (out / "model_card.md").read_text()  # the card registered with the model, also in the report
    assert "| frozen_epochs | 3 |" in card and "## Intended and out-of-scope uses" in card
    assert '<section class="model-card">' in report


def test_metrics_agree_with_their_definitions_on_many_samples():
    labels, probabilities = _random_probabilities(3000, seed=4)
    sources = np.where(np.arange(3000) % 3 == 0, "PublicTest", "PrivateTest")

    metrics = ev.compute_metrics(labels, probabilities, sources)

    predicted = probabilities.argmax(axis=1)
    matrix = np.array(metrics["confusion_matrix"])
    assert metrics["accuracy"] == pytest.approx((predicted == labels).mean())
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    for k, name in enumerate(CLASSES):
        row = metrics["per_class"][name]
        assert row["support"] == matrix[k].sum()
        assert row["recall"] == pytest.approx(matrix[k, k] / matrix[k].sum())
        assert row["precision"] == pytest.approx(matrix[k, k] / matrix[:, k].sum())
        curve = metrics["roc_curves"][name]
        assert len(curve["fpr"]) <= ev.MAX_ROC_POINTS
        assert curve["fpr"][0] == 0.0 and curve["fpr"][-1] == 1.0 and curve["tpr"][-1] == 1.0
        assert np.all(np.diff(curve["fpr"]) >= 0)
    assert metrics["macro_roc_auc"] == pytest.approx(np.mean([r["roc_auc"] for r in metrics["per_class"].values()]))
    assert 0.5 < metrics["macro_roc_auc"] <= 1.0
    micro = metrics["roc_curves"]["micro"]
    assert len(micro["fpr"]) <= ev.MAX_ROC_POINTS and micro["thresholds"][0] == 1.0  # sklearn's +inf, capped
    assert metrics["micro_roc_auc"] == pytest.approx(np.trapezoid(micro["tpr"], micro["fpr"]), abs=0.01)
    public = sources == "PublicTest"
    assert metrics["public_test_accuracy"] == pytest.approx((predicted == labels)[public].mean())
    assert metrics["private_test_accuracy"] == pytest.approx((predicted == labels)[~public].mean())
    assert metrics["source_split_counts"] == {"PublicTest": 1000, "PrivateTest": 2000}
    json.dumps(metrics, allow_nan=False)  # strict JSON: no NaN or Infinity anywhere


def test_a_class_missing_from_the_test_set_has_no_auc_but_the_rest_do():
    labels, probabilities = _random_probabilities(400, seed=5)
    keep = labels != CLASSES.index("disgust")

    metrics = ev.compute_metrics(labels[keep], probabilities[keep])

    assert metrics["per_class"]["disgust"]["roc_auc"] is None
    assert metrics["per_class"]["disgust"]["support"] == 0
    defined = [r["roc_auc"] for name, r in metrics["per_class"].items() if name != "disgust"]
    assert metrics["macro_roc_auc"] == pytest.approx(np.mean(defined))
    assert metrics["public_test_accuracy"] is None and metrics["private_test_accuracy"] is None


def test_a_class_neither_in_the_labels_nor_predicted_is_left_out_of_the_macro_averages():
    labels = np.repeat([k for k in range(NUM_CLASSES) if CLASSES[k] != "disgust"], 2)
    probabilities = np.full((len(labels), NUM_CLASSES), 0.01)
    probabilities[np.arange(len(labels)), labels] = 0.94  # every image right

    metrics = ev.compute_metrics(labels, probabilities)

    disgust = metrics["per_class"]["disgust"]
    assert disgust["precision"] is None and disgust["recall"] is None and disgust["f1"] is None
    assert metrics["macro_f1"] == 1.0 and metrics["macro_f1_classes"] == NUM_CLASSES - 1
    assert metrics["macro_roc_auc"] == 1.0 and metrics["macro_roc_auc_classes"] == NUM_CLASSES - 1
    json.dumps(metrics, allow_nan=False)


def test_a_class_predicted_but_absent_from_the_labels_counts_against_macro_f1():
    labels = np.repeat([k for k in range(NUM_CLASSES) if CLASSES[k] != "disgust"], 2)
    probabilities = np.full((len(labels), NUM_CLASSES), 0.01)
    probabilities[np.arange(len(labels)), labels] = 0.94
    probabilities[0, CLASSES.index("disgust")] = 0.95  # one angry image called disgust

    metrics = ev.compute_metrics(labels, probabilities)

    disgust = metrics["per_class"]["disgust"]
    assert disgust["precision"] == 0.0 and disgust["f1"] == 0.0 and disgust["recall"] is None
    assert metrics["macro_f1_classes"] == NUM_CLASSES
    f1s = [row["f1"] for row in metrics["per_class"].values()]
    assert metrics["macro_f1"] == pytest.approx(np.mean(f1s)) and metrics["macro_f1"] < 0.9


def test_confidence_metrics_follow_the_thresholds():
    labels, probabilities = _random_probabilities(500, seed=6)
    entries = ev.confidence_metrics(labels, probabilities)
    assert [e["confidenceThreshold"] for e in entries] == list(ev.CONFIDENCE_THRESHOLDS)
    assert entries[0]["recall"] == 1.0  # threshold 0 predicts every label
    recalls = [e["recall"] for e in entries]
    assert all(a >= b for a, b in zip(recalls, recalls[1:]))
    assert entries[0]["recallAt1"] == pytest.approx((probabilities.argmax(axis=1) == labels).mean())


def test_a_dataset_without_test_rows_is_rejected(tmp_path):
    dataset = _dataset()
    train_only = dataset.subset(dataset.indices("train"))
    with pytest.raises(DatasetError, match="test"):
        ev.evaluate(tmp_path / "unused.keras", train_only, tmp_path / "eval")
