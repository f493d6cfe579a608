"""tf.data input pipeline over in-memory FER images.

FER-2013 is small (about 80 MB as uint8), so the images stay in memory as uint8 and
are cast to float32 one batch at a time, inside the graph: no per-image Python and
no files. Augmentation and preprocessing live in the model, not here.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    sample_weights: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batched ``(image, label[, sample_weight])`` dataset for ``fit``/``predict``.

    Args:
        images: (N, 48, 48) or (N, 48, 48, 1) uint8 pixel values.
        labels: (N,) class indices into ``CLASSES``.
        batch_size: Images per batch (the global batch under a distribution strategy).
        shuffle: Reshuffle the whole set every epoch (training); False keeps the order.
        seed: Shuffle seed, so runs repeat.
        sample_weights: Optional (N,) per-image loss weights (e.g. class weights).

    Returns:
        A dataset of float32 images (B, 48, 48, 1) with raw 0..255 values, int32
        labels (B,) and, when given, float32 weights (B,); prefetched.
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
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _to_float(images, *rest):
    """Cast a uint8 batch to float32, leaving labels and weights as they are."""
    return (tf.cast(images, tf.float32), *rest)
