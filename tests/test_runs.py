"""The run record, the local run index and `fer-pipeline runs compare`.

The end-to-end case runs `fer-pipeline run` twice on generated data with two learning
rates and compares them. It goes through ingest, split, both training phases,
evaluation and the report as they are, with a tiny stand-in for DenseNet169 so that it
takes seconds (tests/test_train.py trains the real one).
"""

from __future__ import annotations

import json
import threading
from unittest import mock

import pytest

from fer_pipeline import cli, runs, synthetic
from fer_pipeline import trainer as train
from fer_pipeline.classes import CLASSES
from tests.tiny_models import tiny_model


def _histories(frozen_lr=1e-4, finetune_lr=1e-5):
    base = {"weights": "none", "batch_size": 64, "frozen_lr": 1e-4, "finetune_lr": 1e-5, "unfreeze_from": ""}
    return [
        {
            "phase": "frozen",
            "epochs_run": 2,
            "best_epoch": 2,
            "averaged": {"epochs": [1, 2], "val_loss": 1.2, "val_accuracy": 0.6},
            "seconds": 10.0,
            "config": base | {"frozen_lr": frozen_lr},
        },
        {
            "phase": "finetune",
            "epochs_run": 1,
            "best_epoch": 1,
            "seconds": 5.5,
            "config": base | {"finetune_lr": finetune_lr, "unfreeze_from": "conv5"},
        },
    ]


def _metrics(accuracy=0.5, f1=0.4):
    return {
        "accuracy": accuracy,
        "macro_f1": f1,
        "weighted_f1": 0.45,
        "macro_roc_auc": 0.8,
        "log_loss": 1.5,
        "public_test_accuracy": accuracy,
        "private_test_accuracy": None,
        "num_test_samples": 70,
        "per_class": {name: {"f1": f1 + 0.01 * k} for k, name in enumerate(CLASSES)},
    }


def _record(run_id, lr=1e-4, accuracy=0.5, f1=0.4, **extra):
    histories = _histories(frozen_lr=lr)
    return runs.run_record(
        run_id=run_id,
        kind="cli",
        params=histories[0]["config"] | extra,
        metrics=_metrics(accuracy, f1),
        histories=histories,
        started="2026-01-01T10:00:00+00:00",
        duration_s=125.0,
    )


def test_where_a_run_keeps_things_is_no_parameter():
    record = runs.run_record(run_id="x", kind="cli", params={"backup_dir": "b", "seed": 1}, metrics=_metrics())
    assert record["params"] == {"seed": 1}


def test_record_fields_and_flat_views():
    record = _record("a", dataset_sha256="abc", flag=True)
    assert record["metrics"]["per_class_f1"]["angry"] == pytest.approx(0.4)
    assert record["phases"]["frozen"] == {"epochs_run": 2, "best_epoch": 2, "averaged_epochs": [1, 2], "seconds": 10.0}
    assert record["phases"]["finetune"]["averaged_epochs"] is None  # its best epoch's weights
    assert record["train_seconds"] == 15.5 and record["duration_s"] == 125.0
    metrics = runs.flat_metrics(record)
    assert metrics["accuracy"] == 0.5 and metrics["f1_surprise"] == pytest.approx(0.46)
    assert "private_test_accuracy" not in metrics
    params = runs.flat_params(record)
    assert params["flag"] == "true" and params["frozen_lr"] == 1e-4
    assert all(isinstance(v, (str, int, float)) for v in params.values())
    json.dumps(record, allow_nan=False)  # strict JSON


def test_index_appends_atomically_and_replaces_a_rerun(tmp_path):
    index = runs.RunIndex(tmp_path / "sub" / "runs.json")
    assert index.records() == []
    index.append(_record("a"))
    index.append(_record("b"))
    index.append(_record("a", accuracy=0.9))  # same run id again: replaced, moved last
    assert [r["run_id"] for r in index.records()] == ["b", "a"]
    assert index.records()[-1]["metrics"]["accuracy"] == 0.9
    assert [r["run_id"] for r in index.last(1)] == ["a"]
    assert not [p for p in index.path.parent.iterdir() if p.name.endswith(".tmp")]
    data = json.loads(index.path.read_text())
    assert data["format_version"] == runs.FORMAT_VERSION


def test_concurrent_appends_lose_nothing(tmp_path):
    index = runs.RunIndex(tmp_path / "runs.json")
    threads = [threading.Thread(target=index.append, args=(_record(f"r{i}"),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r["run_id"] for r in index.records()) == sorted(f"r{i}" for i in range(8))


def test_a_corrupt_index_is_reported(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text("{not json")
    with pytest.raises(runs.RunIndexError, match="not valid JSON"):
        runs.RunIndex(path).records()


def test_compare_shows_only_differing_params_and_marks_the_best():
    table = runs.compare_table([_record("a", lr=1e-3, accuracy=0.4), _record("b", lr=1e-4, accuracy=0.6)])
    lines = table.splitlines()
    assert "#1 a" in lines[0] and "#2 b" in lines[0]
    (lr_line,) = [line for line in lines if line.startswith("frozen_lr")]
    assert "0.001" in lr_line and "0.0001" in lr_line
    assert not [line for line in lines if line.startswith("weights")]  # the same in both
    (accuracy_line,) = [line for line in lines if line.startswith("test accuracy")]
    assert "0.4000" in accuracy_line and "0.6000 *" in accuracy_line
    (loss_line,) = [line for line in lines if line.startswith("log loss")]
    assert loss_line.count("*") == 0  # a tie marks nothing
    for name in CLASSES:
        assert any(line.startswith(name) for line in lines)
    assert "2m 05s" in table
    assert "weights" in runs.compare_table([_record("a"), _record("b")], all_params=True)


def test_cli_compare_errors_and_json(tmp_path, capsys):
    index = tmp_path / "runs.json"
    for command in ("list", "compare"):  # a mistyped --index is not "no runs yet"
        assert cli.main(["runs", command, "--index", str(index)]) == 2
        assert f"--index {index} does not exist" in capsys.readouterr().err
    index.write_text(json.dumps({"format_version": runs.index.FORMAT_VERSION, "runs": []}))
    assert cli.main(["runs", "list", "--index", str(index)]) == 0  # nothing to list is a listing
    assert cli.main(["runs", "compare", "--index", str(index)]) == 1  # nothing to compare is not a comparison
    capsys.readouterr()
    runs.RunIndex(index).append(_record("a"))
    runs.RunIndex(index).append(_record("b", lr=1e-3))
    assert cli.main(["runs", "compare", "--index", str(index), "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["a", "b"]
    assert cli.main(["runs", "compare", "--index", str(index), "--run", "nope"]) == 2
    assert "runs list" in capsys.readouterr().err
    assert cli.main(["runs", "list", "--index", str(index)]) == 0
    assert capsys.readouterr().out.count("accuracy 0.5000") == 2


# ------------------------------------------------------------------ two local runs
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    source = synthetic.write_kaggle_zip(tmp / "fer2013.zip", n_train=8, n_test=3)
    index = tmp / "runs.json"
    with mock.patch.object(train, "build_model", tiny_model), mock.patch.object(train, "unfreeze_backbone"):
        for name, lr in (("lr-high", "0.01"), ("lr-low", "0.001")):
            code = cli.main(
                [
                    "-q",
                    "run",
                    str(source),
                    "--out",
                    str(tmp / name),
                    "--runs-index",
                    str(index),
                    "--weights",
                    "none",
                    "--frozen-epochs",
                    "2",
                    "--finetune-epochs",
                    "1",
                    "--batch-size",
                    "16",
                    "--frozen-lr",
                    lr,
                    "--run-eagerly",
                    "true",
                ]
            )
            assert code == 0
    return tmp, index


def test_two_local_runs_are_recorded_and_compared(two_runs, capsys):
    tmp, index = two_runs
    records = runs.RunIndex(index).records()
    assert [r["params"]["frozen_lr"] for r in records] == [0.01, 0.001]
    for record, name in zip(records, ("lr-high", "lr-low")):
        assert record["run_id"].startswith(f"{name}-") and record["kind"] == "cli"
        assert record["duration_s"] > 0 and record["phases"]["frozen"]["epochs_run"] == 2
        saved = json.loads((tmp / name / "evaluation" / "metrics.json").read_text())
        assert record["metrics"]["accuracy"] == saved["accuracy"]
        assert record["metrics"]["per_class_f1"] == {c: saved["per_class"][c]["f1"] for c in CLASSES}
        assert json.loads((tmp / name / "evaluation" / runs.RECORD_FILE).read_text()) == record

    capsys.readouterr()
    assert cli.main(["runs", "compare", "--index", str(index)]) == 0
    table = capsys.readouterr().out
    (lr_line,) = [line for line in table.splitlines() if line.startswith("frozen_lr")]
    assert "0.01" in lr_line and "0.001" in lr_line
    for record in records:
        assert record["run_id"] in table
        assert f"{record['metrics']['accuracy']:.4f}" in table and f"{record['metrics']['macro_f1']:.4f}" in table
    for label in ("test accuracy", "macro-F1", "duration", *CLASSES):
        assert any(line.startswith(label) for line in table.splitlines()), label
    # parameters that do not differ stay out
    assert not [line for line in table.splitlines() if line.startswith(("batch_size", "weights"))]


def test_the_report_shows_the_run_parameters_and_the_data_checks(two_runs):
    tmp, _ = two_runs
    html = (tmp / "lr-low" / "evaluation" / "report.html").read_text()
    for text in ("Run parameters", "frozen_lr", "0.001", "duplicates", "leakage", "conflicting_groups"):
        assert text in html, text
