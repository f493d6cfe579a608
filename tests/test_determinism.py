"""Determinism: the same data, seed and config give the same dataset, split and class
weights bit for bit, and on CPU the same trained weights for a short run of both phases.

Each repetition runs in its own process with its own PYTHONHASHSEED, so nothing carries
over between them (TensorFlow's op seeds, hash order, caches). docs/reliability.md says
where GPU runs still differ and how TrainConfig.deterministic turns on
``tf.config.experimental.enable_op_determinism``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fer_pipeline import synthetic
from fer_pipeline.config import SplitConfig
from fer_pipeline.ingest import read_source
from fer_pipeline.split import make_split


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("det")
    return {
        "zip": synthetic.write_kaggle_zip(root / "fer2013.zip", n_train=6, n_test=2),
        "csv": synthetic.write_fer_csv(root / "fer2013.csv", n_train=6, n_test=2),
    }


def _start(code: str, *args: str, hash_seed: int) -> subprocess.Popen:
    """Start ``code`` in a fresh interpreter with its own PYTHONHASHSEED."""
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _output(process: subprocess.Popen) -> str:
    """Wait for a started child; its stdout."""
    out, err = process.communicate(timeout=400)
    assert process.returncode == 0, out + err
    return out


def _child(code: str, *args: str, hash_seed: int) -> str:
    return _output(_start(code, *args, hash_seed=hash_seed))


@pytest.mark.parametrize("kind", ["zip", "csv"])
def test_same_source_gives_the_same_dataset_and_report(sources, kind):
    a, b = read_source(sources[kind]), read_source(sources[kind])
    for name in ("images", "labels", "splits", "source_splits", "keys"):
        assert getattr(a.dataset, name).tobytes() == getattr(b.dataset, name).tobytes(), name
    assert a.dataset.manifest == b.dataset.manifest and a.report.to_dict() == b.report.to_dict()


SPLIT_CHILD = """
    import hashlib, sys
    from pathlib import Path
    from fer_pipeline.config import SplitConfig
    from fer_pipeline.steps import ingest_step, split_step
    source, out = sys.argv[1], Path(sys.argv[2])
    ingest_step(source, out / "dataset")
    split_step(str(out / "dataset"), out / "split.json", SplitConfig(val_fraction=0.25, seed=12))
    print(hashlib.sha256((out / "split.json").read_bytes()).hexdigest())
"""


def test_split_and_class_weights_are_bit_for_bit_across_processes(sources, tmp_path):
    digests = {_child(SPLIT_CHILD, str(sources["zip"]), str(tmp_path / f"r{seed}"), hash_seed=seed) for seed in (1, 2)}
    assert len(digests) == 1
    first, second = (json.loads((tmp_path / f"r{seed}" / "split.json").read_text()) for seed in (1, 2))
    assert first["class_weights"] == second["class_weights"]  # the floats themselves, not rounded
    assert first["train_indices"] == second["train_indices"] and first["val_indices"] == second["val_indices"]


def test_split_depends_on_the_seed_and_only_on_it(sources):
    dataset = read_source(sources["zip"]).dataset
    same = [make_split(dataset, SplitConfig(val_fraction=0.25, seed=12)) for _ in range(2)]
    other = make_split(dataset, SplitConfig(val_fraction=0.25, seed=13))
    assert json.dumps(same[0].to_json()) == json.dumps(same[1].to_json())
    assert not np.array_equal(same[0].val_indices, other.val_indices)


TRAIN_CHILD = """
    import hashlib, json, sys
    from pathlib import Path
    import keras
    import numpy as np
    from fer_pipeline import trainer as train
    from fer_pipeline.training_data import phase_data
    from fer_pipeline.config import TrainConfig
    from fer_pipeline.tf_data import make_dataset
    from fer_pipeline.model import unfreeze_backbone
    from fer_pipeline.split import Split
    from fer_pipeline.steps import load_dataset
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    dataset, split = load_dataset(str(data / "dataset")), Split.load(data / "split.json")
    cfg = TrainConfig(weights="none", dense_units=(8,), dropouts=(0.3,), batch_size=32, frozen_epochs=1,
                      run_eagerly=True, seed=5)

    def digest(model):
        return hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights())).hexdigest()

    # phase 1 through the pipeline's own function; then one fine-tuning epoch of the last
    # DenseNet block on the model in memory (backpropagation through convolutions), which
    # skips fine_tune's reload of model.keras (~10 s) and changes nothing that is checked
    frozen = train.train_frozen(dataset, split, cfg, out / "frozen")
    frozen_digest = digest(frozen.model)
    model = frozen.model
    unfreeze_backbone(model, "conv5_block32_0_bn")
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", run_eagerly=True)
    keras.utils.set_random_seed(cfg.seed)
    rows = phase_data(dataset, split, cfg).train_indices
    fitted = model.fit(make_dataset(dataset.images[rows], dataset.labels[rows], 32, shuffle=True, seed=cfg.seed),
                       epochs=1, verbose=0)
    print(json.dumps({"frozen": [frozen_digest, frozen.history["loss"], frozen.history["val_loss"]],
                      "finetune": [digest(model), fitted.history["loss"]]}))
"""


@pytest.mark.slow
def test_a_short_cpu_run_gives_the_same_weights_bit_for_bit(sources, tmp_path):
    prepared = tmp_path / "prepared"
    _child(SPLIT_CHILD, str(sources["zip"]), str(prepared), hash_seed=0)
    # both at once: independent processes, and the test takes the time of one
    children = [_start(TRAIN_CHILD, str(prepared), str(tmp_path / f"t{seed}"), hash_seed=seed) for seed in (1, 2)]
    runs = [json.loads(_output(child).splitlines()[-1]) for child in children]
    assert runs[0] == runs[1]  # weights of both phases (sha256 of every variable's bytes) and the losses
    assert runs[0]["frozen"][0] != runs[0]["finetune"][0]  # fine-tuning changed the weights


def test_deterministic_turns_on_op_determinism(monkeypatch):
    import tensorflow as tf

    from fer_pipeline import feed_tf
    from fer_pipeline import trainer as train
    from fer_pipeline.config import TrainConfig

    class Reached(Exception):
        """Raised where the phase would pick its devices: what comes before it is what counts."""

    calls = []
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: calls.append(True))
    monkeypatch.setattr(feed_tf, "configure_devices", lambda cfg: (_ for _ in ()).throw(Reached()))
    for deterministic in (False, True):
        with pytest.raises(Reached):
            train.train_frozen(None, None, TrainConfig(deterministic=deterministic), Path("unused"))
    assert calls == [True]  # only when asked for: it is process-wide and cannot be undone
