"""The `fer-pipeline` console script: exit codes and what it prints."""

import json
import shutil

import pytest

from fer_pipeline import synthetic
from fer_pipeline.cli import main


def test_validate_prints_the_report_and_exits_0_for_a_usable_dataset(kaggle_zip, capsys):
    assert main(["validate", str(kaggle_zip)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "140" in out  # 7 classes x 20 train images
    assert "dataset usable" in out


def test_validate_exits_1_and_names_the_missing_class(kaggle_tree, capsys):
    shutil.rmtree(kaggle_tree / "train" / "disgust")
    assert main(["validate", str(kaggle_tree)]) != 0
    captured = capsys.readouterr()
    assert "disgust" in captured.out + captured.err


def test_missing_source_is_one_error_line_with_exit_2(tmp_path, capsys):
    assert main(["ingest", str(tmp_path / "nope.zip"), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope.zip" in err and "Traceback" not in err


def test_ingest_then_split_through_the_cli(kaggle_zip, tmp_path, capsys):
    assert main(["ingest", str(kaggle_zip), "--out", str(tmp_path / "ds")]) == 0
    assert (tmp_path / "ds" / "manifest.json").is_file()
    capsys.readouterr()
    assert (
        main(
            [
                "split",
                str(tmp_path / "ds"),
                "--out",
                str(tmp_path / "split.json"),
                "--val-fraction",
                "0.25",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert sum(printed["validation"].values()) == 35 and sum(printed["train"].values()) == 105
    assert json.loads((tmp_path / "split.json").read_text())["seed"] == 5


def test_run_with_the_cpu_preset_trains_the_compact_network_and_flags_override_it(kaggle_zip, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "run",
            str(kaggle_zip),
            "--out",
            str(out),
            "--preset",
            "cpu",
            "--frozen-epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--compact-widths",
            "8,16",
            "--run-eagerly",
            "true",
            "--runs-index",
            str(tmp_path / "runs.json"),
        ]
    )
    assert code == 0
    record = json.loads((out / "finetune" / "history.json").read_text())["config"]
    assert record["backbone"] == "compact" and record["tta"] is True and record["schedule"] == "cosine"
    assert record["compact_widths"] == [8, 16] and record["frozen_epochs"] == 1  # the flags won
    split = json.loads((out / "split.json").read_text())
    assert split["val_fraction"] == 0.1  # the preset's
    assert (out / "evaluation" / "metrics.json").is_file()


def test_run_with_the_cpu_preset_on_a_cpu_without_bfloat16_says_which_epochs_keep_its_time(
    tmp_path, monkeypatch, caplog
):
    from fer_pipeline import precision
    from fer_pipeline.presets import PRESETS

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma", "avx512f"}))
    monkeypatch.setattr(precision, "nvidia_gpu_visible", lambda: False)
    missing = str(tmp_path / "missing.zip")  # the note comes before the data is read
    caplog.set_level("INFO", logger="fer_pipeline.cli")
    assert main(["run", missing, "--out", str(tmp_path / "run"), "--preset", "cpu"]) != 0
    note = [r.getMessage() for r in caplog.records if "float32" in r.getMessage()]
    assert len(note) == 1 and f"{PRESETS['cpu']['time_budget_minutes']:g}-minute time budget" in note[0]
    assert f"its {PRESETS['cpu']['frozen_epochs']} epochs" in note[0]
    caplog.clear()  # the budget turned off: the epochs that keep the time instead
    main(["run", missing, "--out", str(tmp_path / "run"), "--preset", "cpu", "--time-budget-minutes", "0"])
    assert "--frozen-epochs 43 keeps" in caplog.text
    caplog.clear()  # a precision or epochs the user chose: nothing to say
    for flags in (["--precision", "float32"], ["--frozen-epochs", "30"]):
        main(["run", missing, "--out", str(tmp_path / "run"), "--preset", "cpu", *flags])
    assert not [r for r in caplog.records if "float32" in r.getMessage() and "1.44x" in r.getMessage()]


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--backbone", "compact", "--unfreeze-from", "nolayer", "--finetune-epochs", "1"], "unfreeze_from='nolayer'"),
        (["--weights", "/nonexistent/w.h5"], "no such file exists"),
    ],
)
def test_run_refuses_what_a_phase_would_refuse_before_reading_the_data(tmp_path, capsys, flags, named):
    """Both were refused by phase 1's build or phase 2's unfreeze: after ingest and split
    (and, for unfreeze_from, the whole first phase), leaving their outputs behind."""
    source = synthetic.write_kaggle_zip(tmp_path / "fer2013.zip", n_train=4, n_test=2)
    out = tmp_path / "run"
    assert main(["run", str(source), "--out", str(out), "--runs-index", str(tmp_path / "runs.json"), *flags]) == 2
    assert named in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "runs.json").exists()


@pytest.mark.parametrize(
    "flag, value, named", [("--dense-units", "a,b", "whole numbers"), ("--dropouts", "0.4,x", "numbers")]
)
def test_a_list_option_that_does_not_parse_says_what_it_takes(tmp_path, capsys, flag, value, named):
    with pytest.raises(SystemExit) as exited:
        main(["run", str(tmp_path / "x.zip"), "--out", str(tmp_path / "run"), flag, value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and f"{value!r} is not a list of {named}; separate them with commas" in err


def test_a_bad_recipe_value_names_the_option_that_set_it(tmp_path, capsys):
    assert main(["run", str(tmp_path / "x.zip"), "--out", str(tmp_path / "run"), "--frozen-lr", "0"]) == 2
    assert "--frozen-lr must be > 0, got 0.0" in capsys.readouterr().err
    assert main(["split", str(tmp_path / "ds"), "--out", str(tmp_path / "s.json"), "--val-fraction", "2"]) == 2
    assert "--val-fraction must be in (0, 1)" in capsys.readouterr().err
