"""tf.data input pipeline over in-memory FER images.

FER-2013 is small (35,887 x 48 x 48 uint8 is about 83 MB), so the images are loaded
once and stay in memory as uint8; batches are gathered, cast to float32 and
prefetched inside the tf.data graph, in parallel with training: no per-image Python,
no files, and the accelerator (or, on CPU, the cores) never waits for input
(``bench/throughput.py`` compares the step time against a synthetic in-memory batch).

Augmentation and preprocessing are layers of the model, so by default they run on
batches inside the training step, on the accelerator when there is one. The one
exception is XLA (``TrainConfig.jit_compile``): Keras' RandomTranslation has no XLA
kernel, so ``trainer.compile_model`` then hands the model's layers up to its
augmentation to this pipeline as ``augment`` (still vectorized over whole batches)
and compiles the rest of the model with XLA.

Determinism: the shuffle order depends on ``seed`` only, elements keep their order
through every stage, and ``augment`` runs sequentially, so seeded augmentation draws
the same numbers in the same order on every run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from fer_pipeline.classes import NUM_CLASSES


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    sample_weights: np.ndarray | None = None,
    augment: Callable[[tf.Tensor], tf.Tensor] | None = None,
    repeat: bool = False,
    mix: Callable | None = None,
) -> tf.data.Dataset:
    """Batched ``(image, label[, sample_weight])`` dataset for ``fit``/``predict``.

    Args:
        images: (N, 48, 48) or (N, 48, 48, 1) uint8 pixel values.
        labels: (N,) class indices into ``CLASSES``.
        batch_size: Images per batch (the global batch under a distribution strategy).
        shuffle: Reshuffle the whole set every epoch (training); False keeps the order.
        seed: Shuffle seed, so runs repeat.
        sample_weights: Optional (N,) per-image loss weights (e.g. class weights).
        augment: Optional function applied to each float32 image batch (B, 48, 48, 1)
            inside the pipeline, e.g. the model's augmentation layers in training mode;
            it may change the image shape (a resize). None leaves images as they are.
        repeat: Repeat forever (reshuffling each pass), for ``steps_per_epoch`` loops.
        mix: Optional ``mixing.mixer``, applied to each batch after ``augment``, its
            NumPy generator seeded from ``seed`` and new for each batch of each pass.

    Returns:
        A dataset of float32 images (B, 48, 48, 1) with raw 0..255 values (or what
        ``augment`` returns), int32 labels (B,) (with ``mix``: float32 soft targets
        (B, 7)) and, when given, float32 weights (B,); prefetched.
    """
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if len(images) != len(labels):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length.")
    tensors: tuple = (images, labels.astype(np.int32))
    if sample_weights is not None:
        if len(sample_weights) != len(labels):
            raise ValueError(f"sample_weights ({len(sample_weights)}) and labels ({len(labels)}) differ in length.")
        tensors += (np.asarray(sample_weights, dtype=np.float32),)
    dataset = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment is not None:
        # Sequential on purpose: one batch at a time keeps seeded random draws in order.
        dataset = dataset.map(lambda batch, *rest: (augment(batch), *rest))
    if mix is not None:
        dataset = _mixed(dataset, mix, seed)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _mixed(dataset: tf.data.Dataset, mix: Callable, seed: int) -> tf.data.Dataset:
    """Each batch through ``mix(images, labels, weights, rng)`` (NumPy), one seed per batch."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    weighted = len(dataset.element_spec) == 3

    def run(key, images, labels, weights=None):
        rng = np.random.default_rng(int(key) % 2**63)
        mixed = mix(images, labels, weights if weighted else None, rng)
        return mixed if weighted else mixed[:2]

    def map_batch(batch, key):
        spec = batch[0].shape
        types = [batch[0].dtype, tf.float32] + ([tf.float32] if weighted else [])  # images keep their dtype
        out = tf.numpy_function(run, [key, *batch], types, stateful=False)
        out[0].set_shape(spec)
        out[1].set_shape([spec[0], NUM_CLASSES])
        if weighted:
            out[2].set_shape([spec[0]])
        return tuple(out)

    return tf.data.Dataset.zip((dataset, seeds)).map(map_batch)


def _to_float(images, *rest):
    """Cast a uint8 batch to float32, leaving labels and weights as they are."""
    return (tf.cast(images, tf.float32), *rest)
