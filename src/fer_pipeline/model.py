"""The classifier: DenseNet169 transfer learning (or a compact CNN from scratch) on 48x48 faces.

The saved model takes raw pixels (0..255, shape (48, 48, 1)) and does everything
else itself with standard Keras layers: optional resizing, augmentation (active only
in training), grayscale to RGB and DenseNet's 'torch' preprocessing (or a plain
rescale for the compact backbone), the backbone and the head. So serving and
evaluation feed the same pixels as training. Load saved files with ``load_model``
below: it registers the custom objects a file can name (``HorizontalFlip``, ``Shift``
and ``augment.ResizedCrop`` for test-time augmentation, ``augment.RandomAffine`` for the
random resized crop, ``augment.RandomErase`` for random erasing, and ``optim.SparseCrossentropy``, the label-smoothing loss in a TTA
model's inner compile config).

The code uses Keras layers and ``keras.ops`` only, so the model also builds and trains
under the JAX backend (``trainer`` with ``feed_numpy``; the GPU machines have no TensorFlow).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import keras
from keras import layers

from fer_pipeline.augment import AffineRanges, RandomAffine, RandomErase, ResizedCrop, crop_on
from fer_pipeline.classes import IMAGE_SIZE, NUM_CLASSES
from fer_pipeline.config import TrainConfig, weights_kind
from fer_pipeline.errors import ConfigError, UnusableFileError

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
BACKBONE_NAME = "backbone"
OUTPUT_NAME = "predictions"
PREPROCESS_OUTPUT_NAME = "preprocess_normalize"  # last preprocessing layer, before the backbone

# keras.applications.densenet.preprocess_input ('torch' mode): x / 255, then ImageNet mean/std per channel.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# First layer of each dense block and transition (compact: of each conv block): the places to unfreeze from.
_BLOCK_START = re.compile(r"^(conv\d_block1_0_bn|pool\d_bn|block\d+_conv1)$")


def build_model(cfg: TrainConfig) -> keras.Model:
    """Build the classifier: a frozen DenseNet169 backbone, or a trainable compact CNN.

    Args:
        cfg: Training config. Uses ``backbone``, ``image_size`` (pixels, side of the
            backbone's input; images are resized inside the model when it is not 48),
            ``weights`` (DenseNet169), ``compact_widths`` (compact), ``head_pooling``, the augmentation
            settings (``horizontal_flip``, ``width_shift``/``height_shift``, ``rotation``,
            ``zoom``, ``erasing``), ``dense_units``, ``dropouts`` and ``seed``.

    Returns:
        An uncompiled model: input "image" (48, 48, 1) float32 raw pixel values
        0..255, output "predictions" (7,) float32 softmax probabilities.

    Raises:
        ConfigError: ``cfg.weights`` cannot be loaded (download failed, file missing
            or not DenseNet169 weights).
    """
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), dtype="float32", name=INPUT_NAME)
    x = inputs
    if cfg.image_size != IMAGE_SIZE:
        x = layers.Resizing(cfg.image_size, cfg.image_size, interpolation="bilinear", name="resize")(x)
    x = _augment(x, cfg)
    if cfg.backbone == "compact":
        x = _compact_backbone(cfg)(layers.Rescaling(1.0 / 255.0, name=PREPROCESS_OUTPUT_NAME)(x))
    else:
        x = _densenet169_features(x, cfg)
    if cfg.head_pooling == "flatten":
        x = layers.Flatten(name="flatten")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    for i, (units, rate) in enumerate(zip(cfg.dense_units, cfg.dropouts), start=1):
        x = layers.Dense(units, activation="relu", name=f"head_dense_{i}")(x)
        x = layers.Dropout(rate, seed=cfg.seed + i, name=f"head_dropout_{i}")(x)
    # float32 output even under mixed_float16, so softmax and the loss stay stable.
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=f"fer_{cfg.backbone}")


def _densenet169_features(x, cfg: TrainConfig):
    """Grayscale to RGB, DenseNet's preprocessing and the frozen DenseNet169 backbone."""
    if not cfg.pretrained:
        logger.info("DenseNet169 starts from random weights (weights=%r): expect a long training.", cfg.weights)
    # Concatenate rather than a Lambda: Lambdas do not load without safe_mode=False.
    x = layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    x = layers.Rescaling(1.0 / 255.0, name="preprocess_scale")(x)
    x = layers.Normalization(
        axis=-1,
        mean=list(IMAGENET_MEAN),
        variance=[s * s for s in IMAGENET_STD],
        name=PREPROCESS_OUTPUT_NAME,
    )(x)
    backbone = _densenet169(cfg.weights, cfg.image_size)
    backbone.trainable = False
    # training=False as in the Keras transfer-learning recipe. Keras 3 lets an outer
    # training=True override it, so what keeps BatchNorm in inference mode in both
    # phases is that BatchNorm stays frozen (frozen BN always runs in inference mode).
    return backbone(x, training=False)


def check_model_options(cfg: TrainConfig) -> None:
    """Refuse now what building or fine-tuning the model would refuse later, after ingest,
    split and (for ``unfreeze_from``) the whole first phase: a weights file that does not
    exist or does not fit the backbone, and a layer name the backbone lacks. A local
    weights file's contents are read when the model is built (seconds in)."""
    if cfg.backbone == "compact":
        _check_compact_weights(cfg)
    elif weights_kind(cfg.weights) == "file":
        _existing_weights_file(cfg.weights)
    if cfg.finetune_epochs > 0 and cfg.unfreeze_from:
        _layer_position(_bare_backbone(cfg), cfg.unfreeze_from)


def _bare_backbone(cfg: TrainConfig) -> keras.Model:
    """The backbone's layers without its weights (names are all a check needs)."""
    if cfg.backbone == "compact":
        return _compact_backbone(dataclasses.replace(cfg, weights="none"))
    side = cfg.image_size
    return keras.applications.DenseNet169(
        include_top=False, weights=None, input_shape=(side, side, 3), name=BACKBONE_NAME
    )


def _check_compact_weights(cfg: TrainConfig) -> None:
    if weights_kind(cfg.weights) not in ("none", "imagenet"):
        raise ConfigError(
            f'backbone="compact" trains from scratch and takes no weights file, got weights={cfg.weights!r}. '
            'Pass weights="none", or backbone="densenet169" for a DenseNet169 weights file.'
        )


def _compact_backbone(cfg: TrainConfig) -> keras.Model:
    """A VGG-style CNN for 48x48 grayscale, trained from scratch (and so trainable from phase 1).

    Each block: two 3x3 conv + BatchNorm + ReLU, squeeze-and-excitation when ``compact_se``
    is set, 2x2 max-pool. BatchNorm momentum 0.9 rather than Keras' 0.99: from scratch, the
    moving statistics must follow weights that change fast, or validation lags training for
    epochs (docs/benchmarks.md, issue 4).
    """
    _check_compact_weights(cfg)
    if weights_kind(cfg.weights) == "imagenet":  # the pipeline's default: say it is not used
        logger.warning(
            'backbone="compact" has no ImageNet weights; weights="imagenet" is ignored, '
            'training starts from random weights (pass weights="none" to silence this).'
        )
    inputs = keras.Input((cfg.image_size, cfg.image_size, 1), name="compact_input")
    x = inputs
    for block, width in enumerate(cfg.compact_widths, start=1):
        for conv in (1, 2):
            name = f"block{block}_conv{conv}"
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=name)(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
            x = layers.ReLU(name=f"{name}_relu")(x)
        if cfg.compact_se:
            x = _squeeze_excite(x, width, cfg.compact_se, name=f"block{block}_se")
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name=BACKBONE_NAME)


def _squeeze_excite(x, width: int, ratio: int, name: str):
    """Scale each of ``width`` channels by a gate in (0, 1) computed from the whole map's mean
    activations through a ``width / ratio``-unit bottleneck (at least 4 units)."""
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    gate = layers.Dense(max(4, width // ratio), activation="relu", name=f"{name}_reduce")(gate)
    gate = layers.Dense(width, activation="sigmoid", name=f"{name}_expand")(gate)
    return layers.Multiply(name=f"{name}_scale")([x, gate])


@keras.saving.register_keras_serializable(package="fer_pipeline")
class HorizontalFlip(layers.Layer):
    """Mirror images left-right, always (unlike RandomFlip): the second view of test-time augmentation."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=2)


@keras.saving.register_keras_serializable(package="fer_pipeline")
class Shift(layers.Layer):
    """Move images ``dy`` pixels down and ``dx`` right, repeating the edge rows and columns."""

    def __init__(self, dy: int = 0, dx: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.dy, self.dx = int(dy), int(dx)

    def call(self, inputs):
        return _shift_axis(_shift_axis(inputs, self.dy, axis=1), self.dx, axis=2)

    def get_config(self):
        return {**super().get_config(), "dy": self.dy, "dx": self.dx}


def _shift_axis(x, by: int, axis: int):
    """Row/column i of the result is i - by of ``x``, clamped to the edges (so edges repeat)."""
    if by == 0:
        return x
    size = x.shape[axis]
    return keras.ops.take(x, [min(max(i - by, 0), size - 1) for i in range(size)], axis=axis)


def tta_offsets(shift: int) -> list[tuple[int, int]]:
    """The (dy, dx) of each view of one image: itself, then ``shift`` px up, down, left, right."""
    return [(0, 0)] + ([(-shift, 0), (shift, 0), (0, -shift), (0, shift)] if shift else [])


def tta_crop_corners() -> list[tuple[int, int]]:
    """Where each crop view of one image sits (``augment.crop_rows``): the centre, then the four corners."""
    return [(0, 0), (-1, -1), (-1, 1), (1, -1), (1, 1)]


def tta_view_count(shift: int = 0, crop: float = 0.0) -> int:
    """How many views ``with_flip_tta(model, shift, crop)`` averages."""
    shifted = len(tta_offsets(shift)) if shift or not crop else 0
    return 2 * (shifted + (len(tta_crop_corners()) if crop else 0))


def with_flip_tta(model: keras.Model, shift: int = 0, crop: float = 0.0) -> keras.Model:
    """``model`` wrapped to average its predictions on each image and its mirror image.

    With ``shift``, also on each of the two shifted ``shift`` pixels four ways (10 views).
    With ``crop`` (a side, fraction of the image's), on the centre and four corner crops of
    each of the two, resized to the input side (ten-crop, 10 views), as the random resized
    crop (``crop_scale``) shows training images; in place of the image, or with ``shift``
    beside its ten shifted views (20 views, each set weighing half).
    Same input and output contract (raw pixels in, 7 probabilities out), so evaluation,
    export and serving need no change; it costs one forward pass per view. Faces are
    close to symmetric and training flips and shifts them, so the views are in-distribution.
    """
    inputs = keras.Input(model.input_shape[1:], dtype="float32", name=INPUT_NAME)
    mirrored = HorizontalFlip(name="tta_flip")(inputs)
    views = []
    for base, tag in ((inputs, "image"), (mirrored, "mirror")):
        if shift or not crop:
            for dy, dx in tta_offsets(shift):
                views.append(base if (dy, dx) == (0, 0) else Shift(dy, dx, name=f"tta_{tag}_shift_{dy}_{dx}")(base))
        if crop:  # float32 whatever the dtype policy: the resampling is exact there
            views += [
                ResizedCrop(crop, corner, dtype="float32", name=f"tta_{tag}_crop_{corner[0]}_{corner[1]}")(base)
                for corner in tta_crop_corners()
            ]
    outputs = layers.Average(name=OUTPUT_NAME, dtype="float32")([model(view) for view in views])
    return keras.Model(inputs, outputs, name=f"{model.name}_tta")


def load_model(path: str | Path) -> keras.Model:
    """Load a saved classifier, uncompiled.

    This module registers ``HorizontalFlip`` and ``Shift``, ``augment`` its layers; ``optim`` registers the loss, which a
    TTA model's inner model still names in its saved compile config.
    """
    import zipfile

    from fer_pipeline import optim  # noqa: F401

    path = Path(path)
    if not path.is_file():
        raise UnusableFileError(f"{path} does not exist or is not a file; pass a model.keras written by training.")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise UnusableFileError(
            f"{path} is not a Keras model file (a .keras file is a zip archive); it is damaged or "
            "something else. Pass a model.keras written by training."
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as exc:  # what Keras raises for bad files
        raise UnusableFileError(
            f"{path} cannot be loaded as a Keras model ({exc}); pass a model.keras written by training."
        ) from None


def float32_copy(model):
    """``model`` with every layer computing in float32, and the same weights.

    Mixed policies keep their variables in float32 already, so the copy's weights are the
    trained ones exactly; only the compute dtype changes. A float32 model is returned as is.
    """
    config = keras.saving.serialize_keras_object(model)
    if not _set_float32(config):
        return model
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    logger.info("Running in float32: the model was trained under a mixed dtype policy.")
    return copy


_POLICY_CLASSES = ("DTypePolicy", "FloatDTypePolicy")


def _set_float32(config) -> bool:
    """Turn every mixed dtype policy in a serialized Keras object into float32, in place;
    True when there was one."""
    changed = False
    if isinstance(config, dict):
        if config.get("class_name") in _POLICY_CLASSES and str(config.get("config", {}).get("name", "")).startswith(
            "mixed_"
        ):
            config["config"]["name"] = "float32"
            return True
        for value in config.values():
            changed |= _set_float32(value)
    elif isinstance(config, list):
        for value in config:
            changed |= _set_float32(value)
    return changed


def unfreeze_backbone(model: keras.Model, unfreeze_from: str = "", *, freeze_batchnorm: bool = True) -> int:
    """Make the backbone trainable from one layer on, keeping BatchNorm frozen.

    Frozen BatchNorm layers run in inference mode, so their moving statistics
    (learned on ImageNet) are neither used per batch nor updated by the small
    FER batches. Recompile the model afterwards for the change to take effect.

    Args:
        model: A model from ``build_model`` (or loaded from one).
        unfreeze_from: Name of a backbone layer (e.g. "conv5_block1_0_bn"); it and
            every later layer become trainable, earlier ones stay frozen. "" unfreezes
            the whole backbone.
        freeze_batchnorm: keep BatchNorm in inference mode (True, for pretrained
            weights). A backbone built with ``weights="none"`` has no statistics worth
            keeping: its BatchNorm must train, or 169 layers of unnormalised random
            convolutions leave the head nothing to learn from.

    Returns:
        The number of trainable weight tensors of the whole model.

    Raises:
        ConfigError: ``unfreeze_from`` is not a layer of the backbone.
    """
    backbone = model.get_layer(BACKBONE_NAME)
    start = _layer_position(backbone, unfreeze_from)
    backbone.trainable = True
    for position, layer in enumerate(backbone.layers):
        is_batchnorm = isinstance(layer, layers.BatchNormalization)
        layer.trainable = position >= start and not (freeze_batchnorm and is_batchnorm)
    count = len(model.trainable_weights)
    logger.info(
        "Unfroze the backbone from %s (%d of %d layers); %d trainable weight tensors, BatchNorm %s.",
        unfreeze_from or "its first layer",
        len(backbone.layers) - start,
        len(backbone.layers),
        count,
        "frozen" if freeze_batchnorm else "trained",
    )
    return count


def block_names(model: keras.Model) -> list[str]:
    """Names of the backbone layers that start a dense block or a transition."""
    return _block_starts(model.get_layer(BACKBONE_NAME))


def _block_starts(backbone: keras.Model) -> list[str]:
    """Backbone layer names that start a dense block or a transition, in order."""
    return [layer.name for layer in backbone.layers if _BLOCK_START.match(layer.name)]


def _augment(x, cfg: TrainConfig):
    """Random flip, shift, rotation, zoom, brightness and erasing; these layers act only in training.

    With the random resized crop on (``crop_scale``/``crop_ratio``), flip, shift, rotation,
    zoom and crop are one ``RandomAffine`` layer (one resampling, as the NumPy feed's);
    else Keras' layers, one resampling each, as the seed's. Erasing comes last (its
    rectangle stays 0 whatever the brightness), as in the NumPy feed: ``augment.RandomErase``.
    """
    if crop_on(cfg):
        x = RandomAffine(AffineRanges.of(cfg), seed=cfg.seed, dtype="float32", name="augment_affine")(x)
    else:
        x = _keras_geometry(x, cfg)
    if cfg.brightness > 0:
        x = layers.RandomBrightness(
            cfg.brightness, value_range=(0, 255), seed=cfg.seed + 104, name="augment_brightness"
        )(x)
    if cfg.erasing > 0:
        x = RandomErase(cfg.erasing, seed=cfg.seed + 103, dtype="float32", name="augment_erase")(x)
    return x


def _keras_geometry(x, cfg: TrainConfig):
    """Keras' flip, translation, rotation and zoom layers, chained."""
    if cfg.horizontal_flip:
        x = layers.RandomFlip("horizontal", seed=cfg.seed, name="augment_flip")(x)
    if cfg.width_shift > 0 or cfg.height_shift > 0:
        x = layers.RandomTranslation(
            height_factor=cfg.height_shift,
            width_factor=cfg.width_shift,
            fill_mode="nearest",
            seed=cfg.seed,
            name="augment_translate",
        )(x)
    if cfg.rotation > 0:
        x = layers.RandomRotation(cfg.rotation, fill_mode="nearest", seed=cfg.seed + 101, name="augment_rotate")(x)
    if cfg.zoom > 0:
        x = layers.RandomZoom(cfg.zoom, fill_mode="nearest", seed=cfg.seed + 102, name="augment_zoom")(x)
    return x


def _densenet169(weights: str, image_size: int) -> keras.Model:
    """DenseNet169 without its top, named "backbone", with the weights ``weights`` names."""
    with _weights_source(weights) as source:
        try:
            return keras.applications.DenseNet169(
                include_top=False,
                weights=source,
                input_shape=(image_size, image_size, 3),
                name=BACKBONE_NAME,
            )
        except Exception as error:  # download and h5 errors come in many types
            raise ConfigError(
                f"Could not load DenseNet169 weights for parameter `weights`={weights!r}: {error}. "
                "Pass a local DenseNet169 include_top=False weights file (.h5 or .weights.h5), "
                'or weights="none" to start from random weights.'
            ) from error


@contextlib.contextmanager
def _weights_source(weights: str) -> Iterator[str | None]:
    """What keras.applications takes: "imagenet", None, or an existing local file path (a
    gs:// file's temporary copy, removed once the backbone has read it)."""
    kind = weights_kind(weights)
    if kind == "imagenet":
        yield "imagenet"
    elif kind == "none":
        yield None
    elif kind == "gcs":
        with _local_copy(weights) as path:
            yield str(path)
    else:
        yield str(_existing_weights_file(weights))


def _existing_weights_file(weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f'Parameter `weights`={weights!r} is neither "imagenet" nor "none", and no such file exists. '
            "Pass the path of a DenseNet169 include_top=False weights file (.h5 or .weights.h5), "
            '"imagenet" (needs internet access) or "none".'
        )
    return path


@contextlib.contextmanager
def _local_copy(uri: str) -> Iterator[Path]:
    """A gs:// weights file copied to a temporary directory that goes when the block ends
    (DenseNet169's weights are 50 MB), through ``storage`` (which, unlike tf.io.gfile,
    honours the Cloud Storage emulator and needs no TensorFlow)."""
    from fer_pipeline import storage

    with tempfile.TemporaryDirectory(prefix="fer-weights-") as scratch:
        target = Path(scratch) / Path(uri).name
        try:
            storage.download_file(uri, target)
        except Exception as error:  # missing object, permission and network errors
            raise ConfigError(
                f"Could not read parameter `weights`={uri!r}: {error}. Check the URI and the service "
                'account\'s read access, or pass a local weights file or "none".'
            ) from error
        yield target


def _layer_position(backbone: keras.Model, name: str) -> int:
    """Index of layer ``name`` in the backbone; "" is the first layer."""
    if not name:
        return 0
    for position, layer in enumerate(backbone.layers):
        if layer.name == name:
            return position
    examples = _block_starts(backbone)
    raise ConfigError(
        f'unfreeze_from={name!r} is not a layer of the backbone. Use "" for the whole '
        f"backbone or a layer name such as {', '.join(examples)}."
    )
