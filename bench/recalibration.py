"""After-training corrections of a saved network, scored on validation: BatchNorm's statistics
re-estimated, and the training prior put back into its probabilities.

    python -m bench.recalibration MODEL.keras [--shift 2] [--tau -0.2 0.25 0.5] [--data FILE]

Two questions about the network the pipeline registers, answered without training again:

- **BatchNorm**: a phase ends with the mean of its last epochs' weights
  (``average_last_epochs``), and BatchNorm's moving statistics are averaged like the
  weights, not measured again for the averaged weights as the SWA paper does. The
  "re-estimated" rows replace every trainable BatchNorm layer's statistics with their exact
  mean over one pass of the training images (batches of 256): once through the model's
  augmentation layers, as training saw them, and once as they are, like the images the
  test-time views come from.
- **The class prior**: the loss weights each class by its prior to the ``-class_weight_power``,
  so the probabilities lean toward rare classes. The "prior^tau" rows multiply them by the
  training prior to the ``tau``: above 0 leans back toward frequent classes (accuracy), below
  0 further toward rare ones (macro-F1).

Each row gives the bare network and the ten shifted views (the preset's test-time views),
accuracy / macro-F1, and the paired change of the ten views against the network as saved
(bench/tta_views.py's bootstrap interval). Reads .gpu/fer-trainval.npz.xz (``python -m
bench.gpu_data``): the test split is not touched. Only networks whose top level is a chain
of single-input layers (the compact backbone) can be re-estimated.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before bench.gpu, which defaults to JAX

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402

from bench.gpu import load_data  # noqa: E402
from bench.tta_views import inner_model, paired_change  # noqa: E402
from fer_pipeline.model import load_model, with_flip_tta  # noqa: E402

AUGMENTATION_PREFIX = "augment_"  # fer_pipeline.model names its augmentation layers so
BATCH = 256


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every trainable BatchNormalization layer, nested models included (a frozen one never updates)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += batch_norm_layers(layer)
        elif isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found.append(layer)
    return found


def check_chain(model: keras.Model) -> None:
    """Refuse a network whose top level is not a chain: its layers are replayed one by one."""
    if branching := [layer.name for layer in model.layers[1:] if isinstance(layer.input, (list, tuple))]:
        raise SystemExit(
            f"{model.name}: layer {branching[0]!r} takes several inputs; only chain-shaped networks "
            "(backbone=compact) can have their BatchNorm statistics re-estimated here"
        )


def reestimate_batch_norm(model: keras.Model, x: np.ndarray, augmented: bool, seed: int = 0) -> None:
    """Set each BatchNorm layer's moving mean and variance to their exact mean over batches of ``x``.

    Batch i moves the statistics by 1/(i+1) (momentum i/(i+1)), so after the pass they are
    the plain mean of every batch's. The model's top-level layers run in training mode, one
    by one, with the augmentation layers skipped unless ``augmented``.
    """
    norms = batch_norm_layers(model)
    momenta = [norm.momentum for norm in norms]
    order = np.random.default_rng(seed).permutation(len(x))
    for i, start in enumerate(range(0, len(x), BATCH)):
        for norm in norms:
            norm.momentum = i / (i + 1)
        batch = x[order[start : start + BATCH]]
        for layer in model.layers[1:]:
            if augmented or not layer.name.startswith(AUGMENTATION_PREFIX):
                batch = layer(batch, training=True)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def scores(y: np.ndarray, probabilities: np.ndarray) -> str:
    predicted = probabilities.argmax(1)
    return f"{accuracy_score(y, predicted):.4f} / {f1_score(y, predicted, average='macro'):.4f}"


def predictions(model: keras.Model, x: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """The bare network's probabilities on ``x`` and the ten shifted views'."""
    bare = model.predict(x, batch_size=BATCH, verbose=0)
    return bare, with_flip_tta(model, shift=shift).predict(x, batch_size=BATCH, verbose=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved .keras classifier (a TTA wrapper is unwrapped)")
    parser.add_argument("--shift", type=int, default=2, help="pixels the ten views shift (default 2, the preset's)")
    parser.add_argument(
        "--tau", type=float, nargs="*", default=[-0.2, 0.25, 0.5], help="powers of the training prior to score"
    )
    parser.add_argument("--data", help="the validation npz (default: FER_GPU_DATA or .gpu/fer-trainval.npz.xz)")
    args = parser.parse_args(argv)
    if args.shift < 1:
        parser.error(f"--shift takes whole pixels >= 1, got {args.shift}")
    data = load_data(args.data)
    x, y, x_train = data["x_val"], data["y_val"], data["x_train"]
    prior = np.bincount(data["y_train"].astype(int), minlength=7) / len(data["y_train"])
    model = inner_model(load_model(args.model))
    check_chain(model)
    saved_weights = model.get_weights()
    bare, views = predictions(model, x, args.shift)
    rows = {"as saved": (bare, views)}
    for tau in args.tau:
        rows[f"prior^{tau:g}"] = (bare * prior**tau, views * prior**tau)
    for augmented, seen in ((True, "through its augmentation"), (False, "as they are")):
        reestimate_batch_norm(model, x_train, augmented)
        rows[f"BatchNorm re-estimated on the training images {seen}"] = predictions(model, x, args.shift)
        model.set_weights(saved_weights)
    reference = views.argmax(1)
    print(f"validation: {len(y)} images; {len(batch_norm_layers(model))} BatchNorm layers\n")
    print("| network | 1 view | 10 views | change vs as saved, 10 views (95% interval) |\n|---|---|---|---|")
    for name, (one, ten) in rows.items():
        change = "" if name == "as saved" else paired_change(y, reference, ten.argmax(1))
        print(f"| {name} | {scores(y, one)} | {scores(y, ten)} | {change} |")


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
