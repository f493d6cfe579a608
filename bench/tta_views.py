"""Validation accuracy of a trained model under more test-time views than the flip.

    python -m bench.tta_views MODEL.keras [--shift 2]

Reads the validation images from .gpu/fer-trainval.npz.xz (``python -m bench.gpu_data``:
the train split divided 90/10, stratified, seed 12, as the cpu preset divides it), so
the test split is not touched. Views: the image, its mirror, and both shifted by
``--shift`` pixels up, down, left and right (edges repeated), through the library's own
``with_flip_tta`` (the ``tta`` and ``tta_shift`` options). A TTA wrapper saved by the
pipeline is unwrapped first.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before bench.gpu, which defaults to JAX

import keras  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402

from bench.gpu import load_data  # noqa: E402
from fer_pipeline.model import load_model, with_flip_tta  # noqa: E402


def inner_model(model: keras.Model) -> keras.Model:
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested[0] if model.name.endswith("_tta") and nested else model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved .keras classifier")
    parser.add_argument("--shift", type=int, default=2, help="pixels each shifted view moves (default 2)")
    args = parser.parse_args()
    data = load_data()
    x, y = data["x_val"], data["y_val"]
    model = inner_model(load_model(args.model))
    views = {
        "image only (1 view)": model,
        "image + mirror (2 views, tta=true)": with_flip_tta(model),
        f"image + mirror, each shifted {args.shift} px 4 ways (10 views, tta_shift={args.shift})": with_flip_tta(
            model, shift=args.shift
        ),
    }
    print(f"validation: {len(y)} images\n\n| views | accuracy | macro-F1 |\n|---|---|---|")
    for name, wrapped in views.items():
        predicted = wrapped.predict(x, batch_size=256, verbose=0).argmax(1)
        print(f"| {name} | {accuracy_score(y, predicted):.4f} | {f1_score(y, predicted, average='macro'):.4f} |")


if __name__ == "__main__":
    main()
