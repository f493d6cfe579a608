"""A stand-in for DenseNet169 where a test needs a trained model fast, not the backbone, and
the smallest recipe that builds the project's own compact network.

Same contract as `fer_pipeline.model.build_model`: (48, 48, 1) raw pixels in, 7 softmax
probabilities out. Not named test_*, so pytest does not collect it.
"""

import keras

from fer_pipeline.config import TrainConfig

# two conv blocks of 4 and 8 filters and one 8-unit head layer: builds in well under a second
TINY_COMPACT = TrainConfig(backbone="compact", weights="none", compact_widths=(4, 8), dense_units=(8,), dropouts=(0.0,))


def tiny_model(cfg=None) -> keras.Model:
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))
