"""Validation accuracy of a trained model under more test-time views than the flip.

    python -m bench.tta_views MODEL.keras [--shift 1 2 3] [--crops 0.8] [--data FILE]

Reads the validation images from .gpu/fer-trainval.npz.xz (``python -m bench.gpu_data``:
the train split divided 90/10, stratified, seed 12, as the cpu preset divides it), so
the test split is not touched. Views, through the library's own ``with_flip_tta`` (the
``tta``, ``tta_shift`` and ``tta_crops`` options): the image, its mirror, both shifted
by ``--shift`` pixels up, down, left and right (edges repeated; one ten-view row per
value given), and, with ``--crops``, the centre and four corner crops of that side of
both, alone and beside the first shift's views (20 views). A TTA wrapper saved by the
pipeline is unwrapped first; the networks a sweep keeps (``FER_GPU_MODELS``) are bare
already.

Beside each row, the change against the first shift's ten views, paired on the same images: how
many images the row gets right that they get wrong and the reverse, and a bootstrap 95%
interval of the accuracy difference (resampling images). Views of one network differ on
few images, so this separates smaller changes than two trainings can. The last column is
each set's prediction time on this machine (batches of 256, after one traced batch).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import NamedTuple

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before bench.gpu, which defaults to JAX

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402

from bench.gpu import load_data  # noqa: E402
from fer_pipeline.model import load_model, with_flip_tta  # noqa: E402

BOOTSTRAP_SAMPLES = 2000


def inner_model(model: keras.Model) -> keras.Model:
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested[0] if model.name.endswith("_tta") and nested else model


def shifted_views(shift: int) -> str:
    """The row every other is compared with: the shifted ten views (the preset's test-time views)."""
    return f"image + mirror, each shifted {shift} px 4 ways (10 views, tta_shift={shift})"


class Scored(NamedTuple):
    """One view set's averaged class probabilities and the seconds its prediction took."""

    probabilities: np.ndarray
    seconds: float


def view_probabilities(model: keras.Model, x: np.ndarray, shifts: list[int], crops: float) -> dict[str, Scored]:
    """Each view set's averaged class probabilities on ``x``, keyed by the row's name, with the
    seconds its prediction took (batches of 256: the cost a view set adds, on this machine).
    The 20-view set pairs the crops with the first of ``shifts``."""
    shift = shifts[0]
    sets = {
        "image only (1 view)": model,
        "image + mirror (2 views, tta=true)": with_flip_tta(model),
        **{shifted_views(each): with_flip_tta(model, shift=each) for each in shifts},
    }
    if crops:
        sets[f"image + mirror, centre and corner crops of side {crops} (10 views, tta_crops={crops})"] = with_flip_tta(
            model, crop=crops
        )
        sets[f"both ten-view sets (20 views, tta_shift={shift} with tta_crops={crops})"] = with_flip_tta(
            model, shift=shift, crop=crops
        )
    return {name: timed_probabilities(wrapped, x) for name, wrapped in sets.items()}


def timed_probabilities(model: keras.Model, x: np.ndarray) -> Scored:
    """``model``'s class probabilities on ``x`` in batches of 256 and the seconds they took,
    after one batch that traces it (the cost of its views on this machine, not of tracing)."""
    model.predict(x[:256], batch_size=256, verbose=0)
    start = time.perf_counter()
    probabilities = model.predict(x, batch_size=256, verbose=0)
    return Scored(probabilities, time.perf_counter() - start)


def paired_change(y: np.ndarray, reference: np.ndarray, predicted: np.ndarray, seed: int = 0) -> str:
    """``predicted``'s accuracy against ``reference``'s on the same images: gained / lost and a 95% interval."""
    difference = (predicted == y).astype(int) - (reference == y).astype(int)
    if not difference.any():
        return "same predictions"
    rng = np.random.default_rng(seed)
    means = difference[rng.integers(0, len(y), (BOOTSTRAP_SAMPLES, len(y)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (
        f"{difference.mean():+.4f} [{low:+.4f}, {high:+.4f}]: "
        f"{int((difference > 0).sum())} right only here, {int((difference < 0).sum())} only there"
    )


def table(
    y: np.ndarray, scored: dict[str, Scored], reference: str, compared_with: str = "the shifted ten views"
) -> list[str]:
    """Markdown rows: each view set's accuracy and macro-F1, its paired change against
    ``reference`` (``compared_with`` names it in the header) and its prediction time per
    thousand images."""
    base = scored[reference].probabilities.argmax(1)
    rows = [
        f"| views | accuracy | macro-F1 | change vs {compared_with} (95% interval) | s / 1,000 images |",
        "|---|---|---|---|---|",
    ]
    for name, (probabilities, seconds) in scored.items():
        predicted = probabilities.argmax(1)
        change = "" if name == reference else paired_change(y, base, predicted)
        rows.append(
            f"| {name} | {accuracy_score(y, predicted):.4f} | {f1_score(y, predicted, average='macro'):.4f} "
            f"| {change} | {1000 * seconds / len(y):.2f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved .keras classifier")
    parser.add_argument(
        "--shift",
        type=int,
        nargs="+",
        default=[2],
        help="pixels each shifted view moves; several values score one ten-view row each, "
        "compared with the first (default 2)",
    )
    parser.add_argument(
        "--crops", type=float, default=0.0, help="side of the ten-crop views, in [0.5, 1) (default 0: not scored)"
    )
    parser.add_argument("--data", help="the validation npz (default: FER_GPU_DATA or .gpu/fer-trainval.npz.xz)")
    args = parser.parse_args(argv)
    if args.crops and not 0.5 <= args.crops < 1:
        parser.error(f"--crops must be 0 or in [0.5, 1), got {args.crops}")
    if min(args.shift) < 1:
        parser.error(f"--shift takes whole pixels >= 1, got {' '.join(map(str, args.shift))}")
    data = load_data(args.data)
    x, y = data["x_val"], data["y_val"]
    scored = view_probabilities(inner_model(load_model(args.model)), x, args.shift, args.crops)
    print(f"validation: {len(y)} images\n")
    print("\n".join(table(y, scored, reference=shifted_views(args.shift[0]))))


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
