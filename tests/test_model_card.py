"""The model card: its content, its place beside the model in the local registry and on
Vertex AI (patched), its section in the HTML report, and `models show`."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from unittest import mock

import pytest

from fer_pipeline import cli_models, model_card, steps
from fer_pipeline.classes import CLASSES
from fer_pipeline.model_card import MODEL_CARD_FILE, build_card, to_html, to_markdown
from fer_pipeline.registry import LocalRegistry
from fer_pipeline.report import render_report

METRICS = {
    "num_test_samples": 7178,
    "accuracy": 0.686,
    "macro_f1": 0.6698,
    "weighted_f1": 0.6828,
    "macro_roc_auc": 0.915,
    "public_test_accuracy": 0.6787,
    "private_test_accuracy": 0.6932,
    "source_split_counts": {"PublicTest": 3589, "PrivateTest": 3589},
    "per_class": {
        name: {"precision": 0.5 + i / 100, "recall": 0.4 + i / 100, "f1": 0.45 + i / 100, "support": 100 + i}
        for i, name in enumerate(CLASSES)
    },
}
PARAMS = {"backbone": "compact", "compact_widths": [16, 64, 128, 256], "frozen_lr": 0.001, "preset": "cpu"}


def markdown_rows(text: str, first_cell: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell} ")
    ]


# ---- content ---------------------------------------------------------------------------


def test_the_card_has_one_row_per_class_with_its_metrics():
    text = to_markdown(build_card(METRICS, PARAMS))
    for i, name in enumerate(CLASSES):
        assert markdown_rows(text, name) == [
            [name, f"{0.5 + i / 100:.4f}", f"{0.4 + i / 100:.4f}", f"{0.45 + i / 100:.4f}", str(100 + i)]
        ]
    assert "| class | precision | recall | F1 | support |" in text


def test_the_card_reports_both_test_halves_and_the_headline():
    text = to_markdown(build_card(METRICS, PARAMS))
    assert markdown_rows(text, "PublicTest") == [["PublicTest", "3589", "0.6787"]]
    assert markdown_rows(text, "PrivateTest") == [["PrivateTest", "3589", "0.6932"]]
    assert markdown_rows(text, "accuracy") == [["accuracy", "0.6860"]]
    assert markdown_rows(text, "test images") == [["test images", "7178"]]


def test_missing_halves_and_classes_read_n_a():
    text = to_markdown(build_card({"accuracy": 0.5, "per_class": {}}))
    assert markdown_rows(text, "PublicTest") == [["PublicTest", "n/a", "n/a"]]
    assert markdown_rows(text, "disgust") == [["disgust", "n/a", "n/a", "n/a", "n/a"]]
    assert "recipe was not recorded" in text


def test_the_card_holds_the_recipe_the_data_caveats_and_the_uses():
    text = to_markdown(build_card(METRICS, PARAMS))
    assert markdown_rows(text, "compact_widths") == [["compact_widths", "[16, 64, 128, 256]"]]
    assert markdown_rows(text, "frozen_lr") == [["frozen_lr", "0.001"]]
    assert "FER-2013" in text and "shared/data/fer2013/README.md" in text and "docs/model-quality.md" in text
    assert "No demographic labels" in text and "duplicate images" in text
    assert "## Intended and out-of-scope uses" in text
    assert "Not for decisions about people" in text and "Not a lie detector" in text


def test_detector_recall_comes_from_faces_when_measured(monkeypatch):
    faces = types.ModuleType("fer_pipeline.faces")
    faces.DETECTOR_RECALL = {"mtcnn": {"recall": 0.93, "photos": 100}, "haar": {"recall": 0.66}}
    monkeypatch.setitem(sys.modules, "fer_pipeline.faces", faces)
    text = to_markdown(build_card(METRICS))
    assert markdown_rows(text, "mtcnn") == [["mtcnn", "recall: 0.93, photos: 100"]]
    assert markdown_rows(text, "haar") == [["haar", "recall: 0.66"]]
    assert "DETECTOR_RECALL" in text


@pytest.mark.parametrize("faces", [None, types.SimpleNamespace(DETECTOR_RECALL={}), types.SimpleNamespace()])
def test_detector_recall_falls_back_to_the_benchmarks(monkeypatch, faces):
    """No faces module (None makes the import fail), no measurements yet, or no constant."""
    monkeypatch.setitem(sys.modules, "fer_pipeline.faces", faces)
    text = to_markdown(build_card(METRICS))
    assert 'Its measured recall: see docs/benchmarks.md, "Face detection".' in text


def test_the_html_card_is_escaped_and_shows_in_the_report(tmp_path):
    card = build_card(METRICS, {"note": "<script>alert(1)</script>"})
    section = to_html(card)
    assert "<script>" not in section and "&lt;script&gt;" in section
    assert "<code>disgust</code>" in section and "`" not in section  # Markdown code spans as <code>
    report = render_report(METRICS, {}, tmp_path / "report.html", model_card=card).read_text()
    assert section in report
    assert '<tr class="class-row"><th scope="row">disgust</th>' in report  # the report's own table
    assert '<tr><th scope="row">disgust</th><td>0.5100</td>' in report  # and the card's
    assert "Not a lie detector" in report


# ---- in the local registry and on Vertex -------------------------------------------------


@pytest.fixture()
def evaluation(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A trained model file, its evaluation (metrics.json and model_card.md), and an export
    step that writes a stand-in SavedModel (the real one needs TensorFlow and minutes)."""

    def fake_export(model_path: Path, export_dir: Path) -> Path:
        export_dir.mkdir(parents=True)
        (export_dir / "saved_model.pb").write_bytes(b"pb")
        return export_dir

    monkeypatch.setitem(sys.modules, "fer_pipeline.export", types.SimpleNamespace(export_serving_model=fake_export))
    model = tmp_path / "trained" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"keras")
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps(METRICS))
    (evaluation / MODEL_CARD_FILE).write_text(to_markdown(build_card(METRICS, PARAMS)))
    return model, evaluation


def test_a_registered_version_keeps_the_evaluations_card(evaluation, tmp_path):
    model, evaluation_dir = evaluation
    result = steps.register_step(
        model, evaluation_dir / "metrics.json", registry=str(tmp_path / "registry"), display_name="fer", labels={}
    )
    stored = tmp_path / "registry" / "fer" / "1" / MODEL_CARD_FILE
    assert result["model_card"] == str(stored)
    assert stored.read_text() == (evaluation_dir / MODEL_CARD_FILE).read_text()
    assert (stored.parent / "saved_model.pb").is_file()  # beside the model it describes


def test_a_training_output_folder_registers_the_model_it_holds(evaluation, tmp_path):
    model, evaluation_dir = evaluation
    result = steps.register_step(
        model.parent,
        evaluation_dir / "metrics.json",
        registry=str(tmp_path / "registry"),
        display_name="fer",
        labels={},
    )
    assert (Path(result["path"]) / "model.keras").read_bytes() == model.read_bytes()


def test_the_registry_keeps_the_metrics_but_not_the_roc_curves(evaluation, tmp_path):
    model, evaluation_dir = evaluation
    curve = {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.8, 1.0], "thresholds": [1.0, 0.5, 0.0]}
    metrics = {**METRICS, "roc_curves": {"micro": curve}}
    (evaluation_dir / "metrics.json").write_text(json.dumps(metrics))
    result = steps.register_step(
        model, evaluation_dir / "metrics.json", registry=str(tmp_path / "registry"), display_name="fer", labels={}
    )
    assert "roc_curves" not in result["metrics"]
    assert result["metrics"] == METRICS  # everything else kept


def test_an_evaluation_without_a_card_gets_one_from_its_metrics(evaluation, tmp_path):
    model, evaluation_dir = evaluation
    (evaluation_dir / MODEL_CARD_FILE).unlink()
    result = steps.register_step(
        model, evaluation_dir / "metrics.json", registry=str(tmp_path / "registry"), display_name="fer", labels={}
    )
    text = Path(result["model_card"]).read_text()
    assert text == to_markdown(build_card(METRICS)) and "recipe was not recorded" in text


def test_on_vertex_the_card_is_uploaded_with_the_model_and_linked_from_the_description(evaluation):
    pytest.importorskip("google.cloud.aiplatform")
    from google.cloud import aiplatform_v1

    model, evaluation_dir = evaluation
    uploaded: dict[str, str] = {}

    def fake_upload_dir(local_dir, uri):
        uploaded.update({p.name: p.read_text(errors="replace") for p in Path(local_dir).iterdir()})
        uploaded["uri"] = uri
        return len(uploaded) - 1

    family = "projects/p/locations/europe-west4/models/7"
    version = mock.Mock(resource_name=family, version_id="1", versioned_resource_name=f"{family}@1")
    with (
        mock.patch.object(steps.storage, "upload_dir", side_effect=fake_upload_dir),
        mock.patch("google.cloud.aiplatform.init", autospec=True),
        mock.patch("google.cloud.aiplatform.Model", autospec=True) as model_cls,
        mock.patch("google.cloud.aiplatform_v1.ModelServiceClient", autospec=True) as client_cls,
    ):
        model_cls.list.return_value = []
        model_cls.upload.return_value = version
        client_cls.return_value.import_model_evaluation.return_value = aiplatform_v1.ModelEvaluation(name="e")
        (evaluation_dir / "vertex_evaluation.json").write_text(json.dumps({"metrics": {"auRoc": 0.9}}))
        result = steps.register_step(
            model,
            evaluation_dir / "metrics.json",
            registry="vertex",
            display_name="fer",
            labels={},
            vertex={
                "project": "p",
                "location": "europe-west4",
                "serving_image": "img",
                "staging_uri": "gs://bucket/staging",
            },
        )

    card_uri = f"{uploaded['uri']}/{MODEL_CARD_FILE}"
    assert uploaded["uri"].startswith("gs://bucket/staging/models/fer/")
    assert uploaded[MODEL_CARD_FILE] == (evaluation_dir / MODEL_CARD_FILE).read_text()
    assert result["model_card"] == card_uri
    description = model_cls.upload.call_args.kwargs["description"]
    assert f"Model card: {card_uri}." in description
    assert "accuracy 0.6860, macro-F1 0.6698 on 7178 images" in description
    assert "Not for decisions about people" in description
    assert json.loads(model_cls.upload.call_args.kwargs["version_description"])["metrics"]["accuracy"] == 0.686


# ---- models show -----------------------------------------------------------------------


def run_models(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fer-pipeline")
    cli_models.add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_models_show_prints_where_the_card_is(tmp_path, capsys):
    registry = LocalRegistry(tmp_path / "registry")
    with_card = tmp_path / "with"
    with_card.mkdir()
    (with_card / MODEL_CARD_FILE).write_text("# card\n")
    without = tmp_path / "without"
    without.mkdir()
    (without / "saved_model.pb").write_bytes(b"pb")
    registry.register("fer", with_card, {"macro_f1": 0.6}, labels={}, description="")
    registry.register("fer", without, {"macro_f1": 0.5}, labels={}, description="")

    assert run_models(["models", "show", "fer@1", "--registry", str(registry.root)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model_card"] == str(registry.root / "fer" / "1" / MODEL_CARD_FILE)

    assert run_models(["models", "show", "fer@2", "--registry", str(registry.root)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["model_card"] is None  # still valid JSON; the note goes to stderr
    assert "fer@2 was registered without a model card" in err


def test_short_description_names_the_card():
    text = model_card.short_description(METRICS, "gs://b/m/model_card.md")
    assert text.startswith("FER-2013 facial-emotion classifier (7 classes)")
    assert "gs://b/m/model_card.md" in text


def test_the_card_describes_the_data_the_run_trained_on():
    counts = {name: 10 for name in CLASSES} | {"disgust": 2, "happy": 40}
    data = {"manifest source": "/data/my_faces.zip", "train images": sum(counts.values()), "test images": 21}
    text = to_markdown(build_card(METRICS, PARAMS, data | {"train per class": counts}))
    assert "`my_faces.zip`" in text and "92 training images" in text and "21 test images" in text
    assert "`disgust` is the rarest (2.2%)" in text and "`happy` the largest (43.5%)" in text
    unrecorded = to_markdown(build_card(METRICS, PARAMS))
    assert "FER-2013 (the Kaggle `msambare/fer2013` layout)" in unrecorded and "rarest" not in unrecorded
