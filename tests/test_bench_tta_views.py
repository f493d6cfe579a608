"""bench/tta_views.py: test-time view sets of one network, compared paired on the same images."""

from __future__ import annotations

import numpy as np
import pytest

from bench import tta_views


def test_a_paired_change_counts_the_images_each_side_gets_right_alone():
    y = np.array([0, 1, 2, 3, 4, 5])
    reference = np.array([0, 1, 2, 0, 0, 0])  # 3 right
    predicted = np.array([0, 1, 0, 3, 4, 0])  # 4 right: 2 gained (3, 4), 1 lost (2)
    change = tta_views.paired_change(y, reference, predicted)
    assert change.startswith("+0.1667 [")
    assert change.endswith("2 right only here, 1 only there")
    low, high = (float(v) for v in change.split("[")[1].split("]")[0].split(", "))
    assert -1 <= low <= 1 / 6 <= high <= 1
    assert tta_views.paired_change(y, reference, reference) == "same predictions"


def test_the_table_scores_every_view_set_against_the_reference():
    y = np.array([0, 1, 1, 0])
    scored = {
        "ten": tta_views.Scored(np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]]), 0.002),  # 3 of 4 right
        "twenty": tta_views.Scored(np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]]), 0.004),  # 4 of 4
    }
    header, rule, ten, twenty = tta_views.table(y, scored, reference="ten")
    assert "change vs" in header and header.endswith("| s / 1,000 images |") and rule.count("|") == 6
    assert ten.startswith("| ten | 0.7500 |") and ten.endswith("|  | 0.50 |")  # 2 ms over 4 images
    assert twenty.startswith("| twenty | 1.0000 | 1.0000 | +0.2500 [")
    assert twenty.endswith("1 right only here, 0 only there | 1.00 |")


def test_the_command_scores_shifted_cropped_and_combined_views_of_a_saved_network(saved_network, capsys):
    model, data, images = saved_network
    tta_views.main([model, "--shift", "1", "--crops", "0.8", "--data", data])
    out = capsys.readouterr().out
    assert f"validation: {images} images" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| views")]
    assert len(rows) == 5  # 1, 2, 10 shifted, 10 cropped, 20 combined
    assert "tta_crops=0.8" in rows[3] and "20 views" in rows[4]
    assert "|  | " in rows[2]  # the reference row has no change against itself
    assert all(float(row.split("|")[-2]) > 0 for row in rows)  # each set's prediction time


def test_several_shifts_score_one_row_each_against_the_first(saved_network, capsys):
    model, data, _ = saved_network
    tta_views.main([model, "--shift", "2", "1", "3", "--data", data])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| image + mirror, each")]
    assert [row.split("tta_shift=")[1][0] for row in rows] == ["2", "1", "3"]
    assert "|  | " in rows[0] and "|  | " not in rows[1] + rows[2]  # compared with the first shift


@pytest.mark.parametrize("shifts", [["0"], ["1", "-2"]])
def test_a_shift_below_one_pixel_is_refused_by_name(tmp_path, capsys, shifts):
    with pytest.raises(SystemExit):
        tta_views.main([str(tmp_path / "missing.keras"), "--shift", *shifts])
    assert f"--shift takes whole pixels >= 1, got {' '.join(shifts)}" in capsys.readouterr().err


def test_a_crop_side_out_of_range_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tta_views.main([str(tmp_path / "missing.keras"), "--crops", "1.2"])
    assert "--crops must be 0 or in [0.5, 1), got 1.2" in capsys.readouterr().err


def test_a_missing_data_file_is_named_with_the_command_that_writes_it(tmp_path):
    missing = tmp_path / "none.npz.xz"
    with pytest.raises(SystemExit) as stopped:
        tta_views.main([str(tmp_path / "net.keras"), "--data", str(missing)])
    assert str(stopped.value).startswith(f"{missing}: no such data file")
    assert "python -m bench.gpu_data DATASET_DIR" in str(stopped.value)
