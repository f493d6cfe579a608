"""bench/gpu_report.py: the recipe sweep's table is computed from the results, not typed in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_report
from fer_pipeline.errors import EXIT_UNUSABLE_INPUT, EXIT_USAGE, ConfigError, exit_in_one_line

ROOT = Path(__file__).resolve().parents[1]


def _result(name: str, seed: int, one: float, ten: float, f1: float, flip: float | None = None) -> dict:
    return {
        "kind": "sweep",
        "name": name,
        "seed": seed,
        "val_accuracy": one,
        "val_accuracy_tta": flip if flip is not None else one,
        "val_accuracy_tta10": ten,
        "val_macro_f1_tta10": f1,
        "deadline_hit": False,
    }


def _write(path, results) -> None:
    path.write_text("\n".join(json.dumps(r) for r in results) + "\n")


def test_rows_average_seeds_and_subtract_the_preset(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _write(first, [{"kind": "devices"}, _result("base", 12, 0.66, 0.68, 0.65), _result("no_aug", 12, 0.59, 0.60, 0.55)])
    _write(second, [_result("base", 13, 0.67, 0.70, 0.66)])

    runs = gpu_report.load_sweep([first, second])
    rows = gpu_report.table(runs)

    assert list(runs) == ["base", "no_aug"] and len(runs["base"]) == 2  # the devices line is not a run
    assert rows[2] == "| base | 12, 13 | 0.6650 | 0.6900 | 0.6550 |  |  |"
    assert rows[3] == "| no_aug | 12 | 0.5900 | 0.6000 | 0.5500 | -0.075 / -0.090 / -0.105 |  |"


def test_view_gains_cover_every_run(tmp_path):
    path = tmp_path / "r.jsonl"
    _write(path, [_result("base", 12, 0.60, 0.63, 0.6, flip=0.62), _result("x", 12, 0.50, 0.50, 0.5, flip=0.51)])
    text = gpu_report.view_gains(gpu_report.load_sweep([path]))
    assert "Over 2 runs: the mirror adds +0.0150 (+0.0100 to +0.0200)" in text
    assert "ten views add +0.0000 more (-0.0100 to +0.0100, lower in 1)" in text


def test_bad_results_name_the_file_and_line_or_the_missing_reference(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_result("base", 12, 0.6, 0.6, 0.6)) + "\nnot json\n")
    with pytest.raises(SystemExit, match=r"r\.jsonl:2: not a JSON line"):
        gpu_report.load_sweep([path])
    _write(path, [_result("other", 12, 0.6, 0.6, 0.6)])
    with pytest.raises(SystemExit, match="No 'base' runs"):
        gpu_report.table(gpu_report.load_sweep([path]))


def test_ten_crop_scores_get_a_column_where_the_results_have_them(tmp_path):
    path = tmp_path / "r.jsonl"
    cropped = {**_result("crop", 12, 0.67, 0.69, 0.66), "val_accuracy_tta_crops": 0.695}
    _write(path, [_result("base", 12, 0.66, 0.68, 0.65), cropped])
    rows = gpu_report.table(gpu_report.load_sweep([path]))
    assert "| 10 crops acc. |" in rows[0] and rows[1].count("|") == rows[0].count("|")
    assert rows[2] == "| base | 12 | 0.6600 | 0.6800 | 0.6500 |  |  |  |"  # an older result: no crop score
    assert rows[3] == "| crop | 12 | 0.6700 | 0.6900 | 0.6600 | 0.6950 | +0.010 / +0.010 / +0.010 |  |"


def test_a_library_error_or_a_missing_file_ends_a_benchmark_in_one_line(capsys):
    def refuse():
        raise ConfigError("Unknown preset 'nope'; choose one of: cpu (or none).")

    def read_missing():
        open("/nonexistent/results.jsonl")

    def miss_a_program():
        raise FileNotFoundError("no chromium found")

    assert exit_in_one_line(refuse) == EXIT_USAGE
    assert capsys.readouterr().err == "error: Unknown preset 'nope'; choose one of: cpu (or none).\n"
    assert exit_in_one_line(read_missing) == EXIT_UNUSABLE_INPUT
    assert capsys.readouterr().err == "error: /nonexistent/results.jsonl does not exist.\n"
    assert exit_in_one_line(miss_a_program) == EXIT_UNUSABLE_INPUT
    assert capsys.readouterr().err == "error: no chromium found\n"  # no file to name: the message itself
    assert exit_in_one_line(lambda: None) == 0 and exit_in_one_line(lambda: 3) == 3
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        exit_in_one_line(lambda: 1 / 0)


def test_a_benchmark_run_as_a_script_refuses_a_missing_file_without_a_traceback(tmp_path):
    missing = tmp_path / "results.jsonl"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_report.py"), str(missing)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == EXIT_UNUSABLE_INPUT
    assert done.stderr == f"error: {missing} does not exist.\n"
