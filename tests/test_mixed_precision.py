"""Mixed precision: with a GPU of unknown (or < 8.0) compute capability visible the project
trains in mixed_float16 with a float32 output (tests/test_precision.py covers the rest of
``precision=auto``).

This machine has no GPU, so ``tf.config.list_physical_devices`` is patched to report
one; nothing runs on it: the checks are the dtype policy ``configure_devices`` sets,
the dtypes the model's layers take under it, and the loss-scaling optimizer Keras
puts in at compile time.
"""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from fer_pipeline import feed_tf, precision
from fer_pipeline import trainer as train
from fer_pipeline.config import TrainConfig
from fer_pipeline.model import BACKBONE_NAME, OUTPUT_NAME, build_model

CFG = TrainConfig(weights="none", dense_units=(8,), dropouts=(0.1,))


@pytest.fixture()
def one_gpu(monkeypatch):
    """Pretend one GPU is visible; restore the float32 policy afterwards."""
    real = tf.config.list_physical_devices
    fake = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [fake] if kind == "GPU" else real(kind))
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_gpu_sets_mixed_float16_and_the_output_stays_float32(one_gpu):
    strategy = feed_tf.configure_devices(CFG)

    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert strategy.num_replicas_in_sync == 1  # one GPU: no MirroredStrategy
    model = build_model(CFG)
    assert model.get_layer("head_dense_1").compute_dtype == "float16"
    assert model.get_layer("head_dense_1").variable_dtype == "float32"  # weights stay float32
    assert model.get_layer(BACKBONE_NAME).layers[-1].compute_dtype == "float16"
    output = model.get_layer(OUTPUT_NAME)
    assert output.compute_dtype == "float32" and output.dtype_policy.name == "float32"
    assert model.outputs[0].dtype == "float32"  # softmax and the loss in float32

    compiled = train.compile_model(model, CFG, 1e-4)
    assert isinstance(compiled.trainable.optimizer, keras.optimizers.LossScaleOptimizer)


def test_mixed_precision_off_or_no_gpu_keeps_float32(one_gpu, monkeypatch):
    feed_tf.configure_devices(TrainConfig(weights="none", mixed_precision=False))
    assert keras.mixed_precision.global_policy().name == "float32"

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))  # no AMX, no AVX-512-BF16
    feed_tf.configure_devices(CFG)
    assert keras.mixed_precision.global_policy().name == "float32"
