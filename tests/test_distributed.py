"""The distributed path on CPU: the CPU split into two logical devices stands in for two GPUs.

One training step under ``tf.distribute.MirroredStrategy`` with two replicas must give
the same weights as one replica with the same global batch: each replica computes the
loss on its half of the batch, Keras scales it by the global batch, and the gradients
are all-reduced before one shared update. The check goes through the project's own
pieces: ``trainer.scale_for_replicas`` (two replicas of ``batch_size`` 4 make the global
batch 8 and double the learning rate), ``trainer.compile_model`` and
``tf_data.make_dataset`` with class weights as sample weights.

The model is a small convolutional one, so the test stays fast: DenseNet169 adds
nothing to what is checked here (the strategy, the loss scaling, the batch and rate
scaling), and no dropout or augmentation, whose random draws differ per replica.
Logical devices must be set before TensorFlow initialises, so the runs happen in a
fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from fer_pipeline import trainer as train
    from fer_pipeline.config import TrainConfig
    from fer_pipeline.tf_data import make_dataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 48, 48), dtype=np.uint8)
    labels = rng.integers(0, 7, 16)
    weights = rng.uniform(0.5, 2.0, 16).astype(np.float32)  # class weights as sample weights

    def small_model():
        keras.utils.set_random_seed(5)
        inputs = keras.Input((48, 48, 1))
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(16, activation="relu")(x)
        return keras.Model(inputs, keras.layers.Dense(7, activation="softmax", dtype="float32")(x))

    def one_step(strategy, cfg, base_rate, optimizer_name):
        replicas = strategy.num_replicas_in_sync
        batch, rate = train.scale_for_replicas(cfg, replicas, base_rate)
        with strategy.scope():
            model = small_model()
            optimizer = keras.optimizers.SGD(rate) if optimizer_name == "sgd" else keras.optimizers.Adam(rate)
            compiled = train.compile_model(model, cfg, rate, optimizer=optimizer)
        data = make_dataset(images[:batch], labels[:batch], batch, shuffle=False, seed=0, sample_weights=weights[:batch])
        history = compiled.trainable.fit(data, epochs=1, verbose=0)
        return batch, rate, [w.tolist() for w in model.get_weights()], history.history["loss"][0]

    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    result = {"replicas": two.num_replicas_in_sync}
    for name in ("sgd", "adam"):
        # One replica at global batch 8 and rate 0.2 against two replicas of 4 at base rate 0.1, scaled.
        result[name] = {
            "one": one_step(one, TrainConfig(weights="none", batch_size=8), 0.2, name),
            "two": one_step(two, TrainConfig(weights="none", batch_size=4, scale_with_replicas=True), 0.1, name),
        }
    result["initial"] = [w.tolist() for w in small_model().get_weights()]
    json.dump(result, sys.stdout)
    """
)


@pytest.fixture(scope="module")
def runs() -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_step_on_two_replicas_matches_one_replica_with_the_same_global_batch(runs, optimizer):
    import numpy as np

    assert runs["replicas"] == 2
    one_batch, one_rate, one_weights, one_loss = runs[optimizer]["one"]
    two_batch, two_rate, two_weights, two_loss = runs[optimizer]["two"]
    assert (one_batch, two_batch) == (8, 8)  # 2 replicas x batch_size 4
    assert one_rate == pytest.approx(two_rate) == pytest.approx(0.2)  # base 0.1 x 2 replicas
    assert two_loss == pytest.approx(one_loss, rel=1e-5)
    moved = False
    for start, a, b in zip(runs["initial"], one_weights, two_weights):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-6)
        moved |= not np.allclose(np.array(a), np.array(start))
    assert moved  # the step did change the weights


def test_without_scaling_batch_size_is_the_global_batch():
    from fer_pipeline.config import TrainConfig
    from fer_pipeline.trainer import scale_for_replicas

    assert scale_for_replicas(TrainConfig(batch_size=64, scale_with_replicas=False), 4, 1e-5) == (64, 1e-5)
    assert scale_for_replicas(TrainConfig(batch_size=64), 4, 1e-5) == (256, pytest.approx(4e-5))
    assert scale_for_replicas(TrainConfig(batch_size=64), 1, 1e-5) == (64, 1e-5)


def test_tf_config_with_several_tasks_selects_multi_worker(monkeypatch):
    from fer_pipeline.feed_tf import is_multi_worker

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert not is_multi_worker()
    cluster = {"chief": ["10.0.0.2:2222"], "worker": ["10.0.0.3:2222", "10.0.0.4:2222"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert is_multi_worker()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["10.0.0.2:2222"]}, "task": {"type": "chief"}}))
    assert not is_multi_worker()
