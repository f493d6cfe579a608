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
        (["--val-fraction", "1.5"], "val_fraction must be in (0, 1), got 1.5"),
        (["--val-fraction", "0"], "val_fraction must be in (0, 1), got 0.0"),  # 0 is not "the default"
        (["--frozen-lr", "-0.1"], "frozen_lr must be > 0, got -0.1"),
        (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
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
def test_local_runs_refuse_a_bad_parameter_before_writing_anything(tmp_path, monkeypatch, module, flags, message):
    monkeypatch.setattr(run_containers, "prepare", lambda *a: pytest.fail("no image may be built"))
    with pytest.raises(SystemExit, match=re.escape(message)):
        module.main([*flags, "--local-dir", str(tmp_path / "local")])
    assert not (tmp_path / "local").exists()


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
