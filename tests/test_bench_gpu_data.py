"""bench/gpu_data.py: the validation data file the sweeps and bench/tta_views.py read."""

from __future__ import annotations

import io
import lzma

import numpy as np
import pytest

from bench import gpu_data
from fer_pipeline import synthetic
from fer_pipeline.classes import CLASSES
from fer_pipeline.steps import ingest_step


def test_the_data_file_holds_the_train_split_divided_90_10_stratified(tmp_path, monkeypatch, capsys):
    ingest_step(str(synthetic.write_kaggle_zip(tmp_path / "fer.zip", n_train=20, n_test=3)), tmp_path / "dataset")
    monkeypatch.chdir(tmp_path)
    gpu_data.main([str(tmp_path / "dataset")])
    assert "126 train, 14 validation images" in capsys.readouterr().out
    with np.load(io.BytesIO(lzma.decompress((tmp_path / gpu_data.OUTPUT).read_bytes()))) as data:
        arrays = {name: data[name] for name in data.files}
    assert set(arrays) == {"x_train", "y_train", "x_val", "y_val"}
    assert np.bincount(arrays["y_val"], minlength=len(CLASSES)).tolist() == [2] * len(CLASSES)
    assert arrays["x_train"].shape[1:] == (48, 48) and len(arrays["x_train"]) == len(arrays["y_train"])


@pytest.mark.parametrize("argv", [[], ["nowhere"]])
def test_a_missing_dataset_is_refused_in_one_line_and_nothing_is_written(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        gpu_data.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert ("nowhere is not a complete canonical dataset" in err) if argv else ("dataset" in err)
    assert not (tmp_path / ".gpu").exists()
