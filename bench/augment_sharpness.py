"""How sharp training images stay through each of the model's augmentation layers.

    python -m bench.augment_sharpness [--images 256] [--rotation 0.03] [--zoom 0.1] [--crop-scale 0.8 1.2]

Every bilinear resampling at a fractional offset blurs, and the model's Keras layers
(``fer_pipeline.model._augment``: flip, shift, rotation, zoom) resample once each, so a
network trained on their output sees softer faces than the unaugmented test images.
Prints, as JSON lines, the mean absolute Laplacian of the images after each layer
relative to the originals (1.0 = as sharp), for the cpu preset's flip and shift plus
the given rotation and zoom (default: runs 1-3's 0.03 and 0.1). It also scores the NumPy feed's single affine resampling (``fer_pipeline.feed_numpy``),
then both again with the random resized crop on (``--crop-scale``, default the FER
anchors' 0.8-1.2): the model then has one ``augment_affine`` layer in place of the chain.

Images: the first ``--images`` validation images of .gpu/fer-trainval.npz.xz
(``python -m bench.gpu_data``); the test split is not touched.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before bench.gpu, which defaults to JAX

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.gpu import COMPACT_BASE, load_data  # noqa: E402
from fer_pipeline.model import build_model  # noqa: E402


def sharpness(images: np.ndarray) -> float:
    """Mean absolute 4-neighbour Laplacian over the interior pixels of (N, H, W, 1) images."""
    centre = images[:, 1:-1, 1:-1]
    laplacian = 4 * centre - images[:, :-2, 1:-1] - images[:, 2:, 1:-1] - images[:, 1:-1, :-2] - images[:, 1:-1, 2:]
    return float(np.abs(laplacian).mean())


def after_each_layer(images: np.ndarray, cfg) -> dict[str, float]:
    """Sharpness relative to ``images`` after each augmentation layer, in the model's order, in training mode."""
    model = build_model(cfg)
    original = sharpness(images)
    stages = [layer.name for layer in model.layers if layer.name.startswith("augment_")]
    return {
        name: round(
            sharpness(np.asarray(keras.Model(model.inputs, model.get_layer(name).output)(images, training=True)))
            / original,
            3,
        )
        for name in stages
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rotation", type=float, default=0.03)
    parser.add_argument("--zoom", type=float, default=0.1)
    parser.add_argument("--crop-scale", type=float, nargs=2, default=(0.8, 1.2), metavar=("LOW", "HIGH"))
    args = parser.parse_args()
    images = load_data()["x_val"][: args.images]
    cfg = replace(COMPACT_BASE, rotation=args.rotation, zoom=args.zoom)
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "images": len(images),
                "rotation": cfg.rotation,
                "zoom": cfg.zoom,
                "keras_layers": after_each_layer(images, cfg),
            }
        )
    )
    from fer_pipeline.feed_numpy import device_augmenter  # one affine resampling, on any backend

    single = sharpness(device_augmenter(cfg)(images, cfg.seed)) / sharpness(images)
    print(json.dumps({"single_affine_resampling": round(single, 3)}))
    cropped = replace(cfg, crop_scale=tuple(args.crop_scale))
    single = sharpness(device_augmenter(cropped)(images, cfg.seed)) / sharpness(images)
    print(
        json.dumps(
            {
                "crop_scale": list(cropped.crop_scale),
                "keras_layers": after_each_layer(images, cropped),
                "single_affine_resampling": round(single, 3),
            }
        )
    )


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
