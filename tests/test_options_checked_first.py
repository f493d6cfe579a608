"""Every option is checked before any work: a bad value fails in one line naming the
option, before the data is read or anything is written, and an explicit 0 is a value
(refused where it is invalid), never "unset"."""

from __future__ import annotations

import re

import pytest

from fer_pipeline import cli, synthetic
from fer_pipeline.config import TrainConfig
from fer_pipeline.errors import ConfigError
from pipelines import run_containers, run_local


@pytest.fixture
def no_ingest(monkeypatch):
    import fer_pipeline.steps as steps

    monkeypatch.setattr(steps, "ingest_step", lambda *a, **k: pytest.fail("the data must not be read"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--val-fraction", "1.5"], "--val-fraction must be in (0, 1), got 1.5"),
        (["--val-fraction", "0"], "--val-fraction must be in (0, 1), got 0.0"),  # 0 is not "the default"
        (["--frozen-lr", "-0.1"], "--frozen-lr must be > 0, got -0.1"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--frozen-lr", "inf"], "--frozen-lr must be a finite number, got inf"),
        (["--min-lr", "nan"], "--min-lr must be a finite number, got nan"),
        (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
    ],
)
def test_cli_run_refuses_a_bad_option_before_reading_the_data(tmp_path, capsys, no_ingest, flags, message):
    data = synthetic.write_kaggle_zip(tmp_path / "fer.zip", n_train=2, n_test=1)
    code = cli.main(["run", str(data), "--out", str(tmp_path / "out"), "--weights", "none", *flags])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", [run_local, run_containers])
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--frozen-lr", "0"], "frozen_lr must be > 0, got 0.0"),
        (["--finetune-lr=-1e-5"], "finetune_lr must be > 0"),
        (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
        (["--max-samples", "-3"], "max_train_samples must be >= 0"),
        (["--threshold", "2"], "--threshold must be an accuracy in [0, 1], got 2.0"),
    ],
)
def test_local_runs_refuse_a_bad_parameter_before_writing_anything(
    tmp_path, monkeypatch, capsys, module, flags, message
):
    monkeypatch.setattr(run_containers, "prepare", lambda *a: pytest.fail("no image may be built"))
    with pytest.raises(SystemExit) as refused:
        module.main([*flags, "--local-dir", str(tmp_path / "local")])
    assert refused.value.code == 2  # a wrong option, as the CLI's
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "local").exists()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"seed": -1}, "seed must be in [0, 4294967295], got -1"),
        ({"val_fraction": float("nan")}, "val_fraction must be a finite number, got nan"),
        ({"min_per_class": 1}, "min_per_class must be >= 2 (a stratified split needs 2), got 1"),
    ],
)
def test_split_config_names_each_bad_value(values, message):
    from fer_pipeline.config import SplitConfig

    with pytest.raises(ConfigError, match=re.escape(message)):
        SplitConfig(**values)


def test_an_explicit_zero_is_kept_where_it_is_valid():
    run = run_local.parse_args(["--epochs", "0", "--max-samples", "0", "--threshold", "0"])
    assert (run.frozen_epochs, run.finetune_epochs, run.max_train_samples, run.threshold) == (0, 0, 0, 0.0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("frozen_lr", 0.0, "frozen_lr must be > 0"),
        ("dropouts", (0.4, 1.0), "dropouts must each be in [0, 1)"),
        ("reduce_lr_factor", 1.0, "reduce_lr_factor must be in (0, 1)"),
        ("width_shift", -0.1, "width_shift must be in [0, 1)"),
        ("early_stopping_patience", -1, "early_stopping_patience and reduce_lr_patience must be >= 0"),
        ("crop_scale", (0.5, float("inf")), "crop_scale must be a finite number, got (0.5, inf)"),
        ("weight_decay", float("inf"), "weight_decay must be a finite number"),
        ("time_budget_minutes", float("nan"), "time_budget_minutes must be a finite number"),
        ("seed", 2**32, "seed must be in [0, 4294967295], got 4294967296"),
    ],
)
def test_train_config_names_each_bad_value(field, value, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{field: value})
    assert message in str(info.value)


@pytest.fixture(scope="module")
def compiled_files(tmp_path_factory):
    from pipelines.compile import compile_pipelines

    return compile_pipelines(tmp_path_factory.mktemp("build"), "reg/cpu:t", "reg/gpu:t", commit="t")


@pytest.mark.parametrize(
    "params, key, message",
    [
        ({"PARAM_frozen_lr": "-1"}, "PARAM_frozen_lr", "frozen_lr must be > 0, got -1.0"),
        ({"PARAM_val_fraction": "0"}, "PARAM_val_fraction", "val_fraction must be in (0, 1), got 0.0"),
        ({"PARAM_tta_shift": "2"}, "PARAM_tta_shift", "tta_shift=2 needs tta=true"),  # a combination
    ],
)
def test_submit_checks_the_run_parameters_as_the_components_will(compiled_files, params, key, message):
    from pipelines.settings import SettingsError, load_settings

    vertex, kfp_file = compiled_files
    with pytest.raises(SettingsError) as info:
        load_settings("kind", None, environ={"KFP_TEMPLATE": str(kfp_file), **params})
    problems = dict(info.value.problems)
    assert key in problems and message in problems[key]
    vertex_env = {
        "TEMPLATE": str(vertex),
        "PROJECT": "p",
        "REGION": "europe-west4",
        "PIPELINE_ROOT": "gs://b/root",
        "SERVICE_ACCOUNT": "sa@p.iam.gserviceaccount.com",
        "PARAM_data_source": "gs://b/x.zip",
        "PARAM_data_prefix": "gs://b/fer",
        **params,
    }
    with pytest.raises(SettingsError) as info:
        load_settings("vertex", None, environ=vertex_env)
    assert key in dict(info.value.problems)


def test_cli_run_refuses_a_damaged_run_index_before_reading_the_data(tmp_path, capsys, no_ingest):
    data = synthetic.write_kaggle_zip(tmp_path / "fer.zip", n_train=2, n_test=1)
    index = tmp_path / "runs.json"
    index.write_text("{not json")
    code = cli.main(["run", str(data), "--out", str(tmp_path / "out"), "--weights", "none", "--runs-index", str(index)])
    err = capsys.readouterr().err
    assert code == 1 and f"{index} is not valid JSON" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_run_refused_by_the_split_leaves_no_output_behind(tmp_path, capsys):
    data = synthetic.write_kaggle_zip(tmp_path / "fer.zip", n_train=1, n_test=1)  # one image a class
    out = tmp_path / "new" / "out"
    code = cli.main(["run", str(data), "--out", str(out), "--weights", "none", "--backbone", "compact"])
    err = capsys.readouterr().err
    assert code == 1 and "Cannot make a stratified split" in err
    assert not (tmp_path / "new").exists()  # ingest had written new/out/dataset
    kept = tmp_path / "kept"
    (kept / "notes.txt").parent.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert cli.main(["run", str(data), "--out", str(kept), "--weights", "none", "--backbone", "compact"]) == 1
    assert (kept / "notes.txt").read_text() == "mine"  # a folder the user made is not removed


@pytest.mark.parametrize("margin", [float("nan"), float("inf"), -0.1, 2.5])
def test_predict_refuses_a_margin_outside_0_to_2(margin):
    from fer_pipeline.errors import FerError
    from fer_pipeline.predict import check_margin

    with pytest.raises(FerError, match="margin must be a number from 0 to 2"):
        check_margin(margin)
    check_margin(2.0)


def test_fine_tuning_refuses_an_architecture_other_than_the_models(tmp_path):
    """The loaded network keeps its shape, so a different image size or head in the
    fine-tuning recipe would be ignored while history.json recorded it: refused instead."""
    import json

    from fer_pipeline.trainer import HISTORY_FILE, check_same_architecture

    frozen = TrainConfig(backbone="compact", weights="none", compact_widths=(8, 16), dense_units=(32,), dropouts=(0.2,))
    model = tmp_path / "frozen" / "model.keras"
    model.parent.mkdir()
    (model.parent / HISTORY_FILE).write_text(json.dumps({"phase": "frozen", "config": frozen.to_dict()}))
    check_same_architecture(model, frozen)  # the same recipe, lists read back from JSON: accepted
    check_same_architecture(tmp_path / "elsewhere" / "model.keras", TrainConfig())  # no record: nothing to compare
    with pytest.raises(ConfigError) as refused:
        check_same_architecture(model, TrainConfig(**{**frozen.to_dict(), "image_size": 64, "compact_widths": (8, 32)}))
    message = str(refused.value)
    assert "was built with --image-size 48 --compact-widths 8,16" in message
    assert "recipe says --image-size 64 --compact-widths 8,32" in message
