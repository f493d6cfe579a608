"""The whole compiled DAG under kfp.local, against the GCS emulator and a local registry.

Two runs on the same generated data: the first registers (threshold 0), the second
cannot pass its threshold (> 1), so the registration gate is seen both ways. Both train the
cpu preset's compact network, the first one epoch in each phase, the second none (the steps
still build, save and evaluate a model): DenseNet169's two phases cost minutes here through
kfp.local (its fine-tuning step took 3.5 of the first run's 6 minutes, on loaded cores) and
are tested in tests/test_train.py; `make run-local` on the sample runs them whole.
"""

import json
from pathlib import Path

import pytest

from fer_pipeline import synthetic
from fer_pipeline.classes import CLASSES
from pipelines.run_local import LocalRun, run_pipeline

pytestmark = pytest.mark.slow


def _run(tmp: Path, source: Path, threshold: float, epochs: int) -> Path:
    run = LocalRun(
        data=str(source),
        frozen_epochs=epochs,
        finetune_epochs=epochs,
        max_train_samples=0,
        batch_size=32,
        threshold=threshold,
        weights="none",
        frozen_lr=1e-3,
        finetune_lr=1e-4,
        local_dir=tmp,
        preset="cpu",  # its phase 2 is off; the explicit epochs turn it back on
    )
    return run_pipeline(run, str(source))


def _outputs(run_dir: Path, task: str) -> dict:
    """The artifacts a task wrote, as kfp.local recorded them in executor_output.json."""
    record = json.loads((run_dir / task / "executor_output.json").read_text())
    return {name: value["artifacts"][0] for name, value in record.get("artifacts", {}).items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    source = synthetic.write_kaggle_zip(tmp / "fer2013.zip", n_train=10, n_test=4)
    return tmp, _run(tmp, source, threshold=0.0, epochs=1), _run(tmp, source, threshold=1.01, epochs=0)


def test_first_run_writes_report_metrics_and_classification_metrics(runs):
    _, first, _ = runs
    report = (first / "evaluate" / "report").read_text()
    assert report.count("data:image/png;base64,") >= 3
    metrics = json.loads((first / "evaluate" / "evaluation" / "metrics.json").read_text())
    assert sum(row["support"] for row in metrics["per_class"].values()) == 7 * 4
    classification = _outputs(first, "evaluate")["classification"]["metadata"]
    assert [c["displayName"] for c in classification["confusionMatrix"]["annotationSpecs"]] == list(CLASSES)
    assert 2 <= len(classification["confidenceMetrics"]) <= 200
    tuned = _outputs(first, "fine-tune")
    assert tuned["metrics"]["metadata"]["epochs_run"] == 1  # the explicit epoch ran the phase the preset turns off
    assert tuned["model"]["metadata"]["recipe.backbone"] == "compact"


def test_gate_registers_when_accuracy_reaches_the_threshold(runs):
    tmp, first, _ = runs
    registered = json.loads((first / "register" / "registered").read_text())
    assert registered["version"] == 1 and "champion" in registered["aliases"]
    index = json.loads((tmp / "registry" / "index.json").read_text())
    assert len(index["models"]["fer-emotion-local"]["versions"]) == 1


def test_gate_skips_registration_below_the_threshold(runs):
    tmp, first, second = runs
    assert second != first and (second / "evaluate" / "report").is_file()
    assert not (second / "register").exists()
    index = json.loads((tmp / "registry" / "index.json").read_text())
    assert len(index["models"]["fer-emotion-local"]["versions"]) == 1


def test_ingest_reuses_the_published_dataset_on_the_second_run(runs):
    _, first, second = runs
    meta = [_outputs(run, "ingest")["dataset"]["metadata"] for run in (first, second)]
    assert meta[0]["uri"] == meta[1]["uri"] and meta[0]["uri"].startswith("gs://fer-local/fer/datasets/")
    assert meta[0]["uploaded_files"] >= 2 and not meta[0]["reused"]
    assert meta[1]["uploaded_files"] == 0 and meta[1]["reused"]
