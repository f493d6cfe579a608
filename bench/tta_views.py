"""Validation accuracy of a trained model under more test-time views than the flip.

    python -m bench.tta_views MODEL.keras [--shift 2]

Reads the validation images from .gpu/fer-trainval.npz.xz (``python -m bench.gpu_data``:
the train split divided 90/10, stratified, seed 12, as the cpu preset divides it), so
the test split is not touched. Views: the image, its mirror, and both shifted by
``--shift`` pixels up, down, left and right (edges repeated). A TTA wrapper saved by
the pipeline is unwrapped first, so every view goes through the same inner model.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before bench.gpu, which defaults to JAX

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402

from bench.gpu import load_data  # noqa: E402
from fer_pipeline.model import load_model  # noqa: E402


def inner_model(model: keras.Model) -> keras.Model:
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested[0] if model.name.endswith("_tta") and nested else model


def shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (abs(dy),) * 2, (abs(dx),) * 2, (0, 0)), mode="edge")
    return padded[:, abs(dy) - dy: abs(dy) - dy + h, abs(dx) - dx: abs(dx) - dx + w]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved .keras classifier")
    parser.add_argument("--shift", type=int, default=2, help="pixels each shifted view moves (default 2)")
    args = parser.parse_args()
    data = load_data()
    x, y = data["x_val"], data["y_val"]
    model = inner_model(load_model(args.model))
    s = args.shift
    offsets = [(0, 0), (-s, 0), (s, 0), (0, -s), (0, s)]
    probs = {}
    for mirror in (False, True):
        for dy, dx in offsets:
            view = shifted(x[:, :, ::-1] if mirror else x, dy, dx)
            probs[(mirror, dy, dx)] = model.predict(view, batch_size=256, verbose=0)
    sets = {
        "image only (1 view)": [(False, 0, 0)],
        "image + mirror (2 views, the pipeline's tta)": [(False, 0, 0), (True, 0, 0)],
        f"image + mirror, each shifted {s} px 4 ways (10 views)": list(probs),
    }
    print(f"validation: {len(y)} images\n\n| views | accuracy | macro-F1 |\n|---|---|---|")
    for name, keys in sets.items():
        predicted = np.mean([probs[k] for k in keys], axis=0).argmax(1)
        print(f"| {name} | {accuracy_score(y, predicted):.4f} | {f1_score(y, predicted, average='macro'):.4f} |")


if __name__ == "__main__":
    main()
