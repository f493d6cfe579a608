"""Each component's function on small artifacts in tmp_path (no KFP runner involved).

The chain ingest -> split -> train_frozen -> fine_tune -> evaluate -> register runs once
per module on a generated dataset, so each test checks one component's outputs.
"""

import json
from pathlib import Path

import pytest
from kfp import dsl

from components import evaluate, fine_tune, ingest, register, split_and_weight, train_frozen
from fer_pipeline import storage, synthetic
from fer_pipeline.classes import CLASSES
from pipelines.gcs_emulator import GcsEmulator

BUCKET = "component-tests"


def _artifact(kind, root: Path, name: str):
    return kind(name=name, uri=str(root / name), metadata={})


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    with GcsEmulator(tmp_path_factory.mktemp("gcs")) as gcs:
        storage.ensure_bucket(BUCKET)
        yield gcs


@pytest.fixture(scope="module")
def chain(tmp_path_factory, emulator):
    """Run all six component functions once; return their artifacts by name."""
    root = tmp_path_factory.mktemp("artifacts")
    source = synthetic.write_kaggle_zip(root / "fer2013.zip", n_train=12, n_test=4)
    a = {
        name: _artifact(kind, root, name)
        for name, kind in {
            "dataset": dsl.Dataset,
            "dataset2": dsl.Dataset,
            "split": dsl.Dataset,
            "weights": dsl.Metrics,
            "frozen": dsl.Model,
            "frozen_history": dsl.Artifact,
            "frozen_metrics": dsl.Metrics,
            "tuned": dsl.Model,
            "tuned_history": dsl.Artifact,
            "tuned_metrics": dsl.Metrics,
            "metrics": dsl.Metrics,
            "classification": dsl.ClassificationMetrics,
            "report": dsl.HTML,
            "evaluation": dsl.Artifact,
            "registered": dsl.Artifact,
        }.items()
    }
    prefix = f"gs://{BUCKET}/fer"
    ingest.python_func(source=str(source), gcs_prefix=prefix, dataset=a["dataset"])
    ingest.python_func(source=str(source), gcs_prefix=prefix, dataset=a["dataset2"])  # same source again
    # One recipe for every step, as the pipeline hands it over. The compact backbone: what
    # is tested is the components' plumbing, and DenseNet169 took four minutes of it
    # (test_pipeline_local and test_train run DenseNet169 through the same steps).
    recipe = dict(
        backbone="compact",
        compact_widths=[8, 16],
        val_fraction=0.25,
        batch_size=16,
        frozen_epochs=1,
        finetune_epochs=1,
        seed=3,
        weights="none",
        frozen_lr=1e-3,
        finetune_lr=1e-4,
    )
    split_and_weight.python_func(dataset=a["dataset"], split=a["split"], class_weights=a["weights"], recipe=recipe)
    train_frozen.python_func(
        dataset=a["dataset"],
        split=a["split"],
        model=a["frozen"],
        history=a["frozen_history"],
        metrics=a["frozen_metrics"],
        recipe=recipe,
    )
    fine_tune.python_func(
        dataset=a["dataset"],
        split=a["split"],
        frozen_model=a["frozen"],
        model=a["tuned"],
        history=a["tuned_history"],
        metrics=a["tuned_metrics"],
        recipe=recipe,
    )
    a["gate"] = evaluate.python_func(
        dataset=a["dataset"],
        model=a["tuned"],
        frozen_history=a["frozen_history"],
        finetune_history=a["tuned_history"],
        metrics=a["metrics"],
        classification=a["classification"],
        report=a["report"],
        evaluation=a["evaluation"],
        recipe=recipe,
    )
    a["recipe"] = recipe
    a["registry"] = root / "registry"
    register.python_func(
        model=a["tuned"],
        evaluation=a["evaluation"],
        dataset=a["dataset"],
        registered=a["registered"],
        registry=str(a["registry"]),
        display_name="fer-test",
        commit="abc123",
    )
    return a


def test_ingest_publishes_content_addressed_and_reuses(chain):
    first, second = (json.loads(Path(chain[k].path).read_text()) for k in ("dataset", "dataset2"))
    sha = chain["dataset"].metadata["source_sha256"]
    assert first["uri"] == f"gs://{BUCKET}/fer/datasets/{sha[:16]}"
    assert storage.exists(first["uri"] + "/manifest.json") and storage.exists(first["uri"] + "/images.npz")
    assert first["uploaded_files"] >= 2 and not first["reused"]
    assert second["uri"] == first["uri"] and second["uploaded_files"] == 0 and second["reused"]
    assert chain["dataset"].metadata["train"] == 7 * 12 and chain["dataset"].metadata["test"] == 7 * 4


def test_split_writes_indices_and_logs_weights(chain):
    split = json.loads(Path(chain["split"].path).read_text())
    assert len(split["train_indices"]) + len(split["val_indices"]) == 7 * 12
    assert set(chain["weights"].metadata) == set(CLASSES)  # log_metric stores into metadata


def test_training_components_write_model_history_and_metrics(chain):
    for model, history, metrics, phase in (
        ("frozen", "frozen_history", "frozen_metrics", "frozen"),
        ("tuned", "tuned_history", "tuned_metrics", "finetune"),
    ):
        assert (Path(chain[model].path) / "model.keras").is_file()
        record = json.loads(Path(chain[history].path).read_text())
        assert record["phase"] == phase and len(record["history"]["loss"]) == 1
        assert chain[metrics].metadata["epochs_run"] == 1
        # both phases ran with the whole resolved recipe, and the model artifact shows it
        assert record["config"]["frozen_lr"] == 1e-3 and record["config"]["finetune_lr"] == 1e-4
        assert record["config"]["seed"] == 3 and chain[model].metadata["recipe.batch_size"] == 16


def test_evaluate_fills_metrics_classification_and_report(chain):
    accuracy = chain["gate"]
    assert 0.0 <= accuracy <= 1.0 and chain["metrics"].metadata["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    matrix = chain["classification"].metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == list(CLASSES)
    assert sum(sum(row["row"]) for row in matrix["rows"]) == 7 * 4
    curve = chain["classification"].metadata["confidenceMetrics"]
    assert 2 <= len(curve) <= 200 and all(0 <= p["falsePositiveRate"] <= 1 for p in curve)
    html = Path(chain["report"].path).read_text()
    assert "<html" in html.lower() and "data:image/png;base64," in html


def test_register_adds_a_champion_version_with_labels(chain):
    version = json.loads(Path(chain["registered"].path).read_text())
    assert version["name"] == "fer-test" and "champion" in version["aliases"]
    card = Path(version["model_card"])  # the evaluation's card, beside the registered model
    assert card.parent == Path(version["path"]) and card.read_text().startswith("# Model card")
    assert card.read_text() == (Path(chain["evaluation"].path) / "model_card.md").read_text()
    index = json.loads((chain["registry"] / "index.json").read_text())
    assert "abc123" in json.dumps(index) and chain["dataset"].metadata["source_sha256"][:16] in json.dumps(index)
