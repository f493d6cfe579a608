"""The HTML report: self-contained, escaped, seven per-class rows, phone-friendly."""

from __future__ import annotations

import base64
import re

import numpy as np

from fer_pipeline import plots
from fer_pipeline.classes import CLASSES, NUM_CLASSES
from fer_pipeline.report import render_report


def _metrics() -> dict:
    per_class = {
        name: {"precision": 0.5 + 0.01 * k, "recall": 0.4, "f1": 0.45, "support": 10 + k, "roc_auc": 0.8}
        for k, name in enumerate(CLASSES)
    }
    per_class["disgust"]["roc_auc"] = None
    return {
        "classes": list(CLASSES),
        "num_test_samples": 91,
        "accuracy": 0.6123,
        "macro_f1": 0.5432,
        "macro_roc_auc": 0.8771,
        "public_test_accuracy": 0.61,
        "private_test_accuracy": 0.6234,
        "confusion_matrix": (np.eye(NUM_CLASSES, dtype=int) * 10 + 1).tolist(),
        "per_class": per_class,
    }


def _plots(tmp_path) -> dict:
    metrics = _metrics()
    curves = {name: {"fpr": [0, 0.2, 1], "tpr": [0, 0.7, 1]} for name in CLASSES}
    history = [
        {
            "phase": "frozen",
            "history": {
                "loss": [1.2, 1.0],
                "val_loss": [1.3, 1.1],
                "accuracy": [0.4, 0.5],
                "val_accuracy": [0.35, 0.45],
            },
        }
    ]
    return {
        "history": plots.plot_history(history, tmp_path / "history.png"),
        "confusion_matrix": plots.plot_confusion_matrix(metrics["confusion_matrix"], CLASSES, tmp_path / "cm.png"),
        "roc": plots.plot_roc_curves(curves, {name: 0.8 for name in CLASSES}, tmp_path / "roc.png"),
    }


def test_report_is_self_contained_with_seven_class_rows(tmp_path):
    plot_paths = _plots(tmp_path)
    out = render_report(
        _metrics(),
        plot_paths,
        tmp_path / "report" / "report.html",
        dataset_summary={"images": 120, "test per class": {"angry": 13}},
        run_info={"frozen_epochs": 20, "weights": "imagenet"},
    )
    html = out.read_text(encoding="utf-8")

    assert html.count('<tr class="class-row">') == NUM_CLASSES
    for name in CLASSES:
        assert f'<th scope="row">{name}</th>' in html
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == len(plot_paths)
    assert base64.b64decode(images[0]) == plot_paths["history"].read_bytes()
    assert "http://" not in html and "https://" not in html
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing fetched from anywhere
    assert '<meta name="viewport"' in html and "max-width" in html and "overflow-x:auto" in html
    # Headline first: accuracy before the plots and the per-class table.
    assert html.index("0.612") < html.index("data:image/png") < html.index('class="class-row"')
    for text in ("0.543", "0.877", "PublicTest accuracy", "0.623", "Run parameters", "imagenet", "Dataset"):
        assert text in html
    assert "n/a" in html  # disgust has no ROC-AUC


def test_a_macro_average_over_fewer_classes_says_so(tmp_path):
    full = render_report(_metrics(), {}, tmp_path / "full.html").read_text()
    short = render_report({**_metrics(), "macro_roc_auc_classes": 6}, {}, tmp_path / "short.html").read_text()
    assert "of 7 classes" not in full
    assert "Macro ROC-AUC (mean of 6 of 7 classes)" in short


def test_every_string_is_html_escaped(tmp_path):
    hostile = '<script>alert("x")</script>'
    fake_png = tmp_path / "plot.png"
    fake_png.write_bytes(b"\x89PNG\r\n\x1a\n")
    html = render_report(
        _metrics(),
        {hostile: fake_png},
        tmp_path / "report.html",
        dataset_summary={hostile: hostile},
        run_info={"note": hostile, "nested": {"k": hostile}},
    ).read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_history_plot_marks_both_phases_and_copes_with_no_history(tmp_path):
    two_phases = [
        {
            "phase": "frozen",
            "history": {"loss": [1.0, 0.9], "val_loss": [1.1, 1.0], "accuracy": [0.4, 0.5], "val_accuracy": [0.3, 0.4]},
        },
        {"loss": [0.8], "val_loss": [0.95], "accuracy": [0.6], "val_accuracy": [0.45]},  # bare history
    ]
    for histories, name in ((two_phases, "two.png"), ([], "none.png")):
        path = plots.plot_history(histories, tmp_path / name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_single_epoch_history_has_a_whole_epoch_axis():
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    plots._plot_metric(ax, [("frozen", {"accuracy": [0.5], "val_accuracy": [0.4], "loss": [1.0]})], "accuracy")

    assert ax.get_xlim() == (0.5, 1.5)
    assert [tick for tick in ax.get_xticks() if 0.5 <= tick <= 1.5] == [1.0]
