"""Validation accuracy of networks averaged: several trained networks' test-time views, their
class probabilities meaned, against one reference network on the same images.

    python -m bench.ensemble REFERENCE.keras MEMBER.keras [MEMBER.keras ...] [--shift 2] [--data FILE]

The question it answers before any ensembling code is written: do N networks trained for
1/N of the epochs each beat one network trained for all of them (the same training
compute)? Each network is scored through the preset's ten views (``with_flip_tta``: the
image, its mirror, both shifted ``--shift`` pixels four ways); the members' averaged
probabilities are the ensemble's. Rows: the reference, each member alone, the members'
mean, and the mean of the reference with them, each with bench/tta_views.py's paired
change against the reference (a bootstrap 95% interval over images). Below the table, how
often the members agree, and on the images they split, how many some member gets right and
how many their mean does: networks that make the same mistakes gain nothing averaged.

Reads the validation images from .gpu/fer-trainval.npz.xz (``python -m bench.gpu_data``),
so the test split is not touched. A TTA wrapper saved by the pipeline is unwrapped first.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before bench.gpu, which defaults to JAX

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.gpu import load_data  # noqa: E402
from bench.tta_views import Scored, inner_model, table, timed_probabilities  # noqa: E402
from fer_pipeline.model import load_model, with_flip_tta  # noqa: E402


def label(path: str) -> str:
    """A network's row name: its file, or its folder where the file is the pipeline's model.keras."""
    file = Path(path)
    return str(file.parent) if file.name == "model.keras" else file.name


def row_names(paths: list[str]) -> list[str]:
    """Each network's row name, distinct so that no member's row replaces another's: the short
    ``label`` where it is unique, else the path as given, numbered where even that repeats."""
    short = [label(path) for path in paths]
    names = [name if short.count(name) == 1 else path for name, path in zip(short, paths)]
    return [f"{name} (#{i + 1})" if names.count(name) > 1 else name for i, name in enumerate(names)]


def load_networks(paths: list[str]) -> list[keras.Model]:
    """The bare networks (TTA wrappers unwrapped), refused before any scoring unless they all
    output the same number of classes."""
    networks = [inner_model(load_model(path)) for path in paths]
    classes = {path: network.output_shape[-1] for path, network in zip(paths, networks)}
    if len(set(classes.values())) > 1:
        raise SystemExit(
            "the networks output different numbers of classes ("
            + ", ".join(f"{path}: {count}" for path, count in classes.items())
            + "): average only classifiers of the same classes"
        )
    return networks


def ten_views(network: keras.Model, x: np.ndarray, shift: int) -> Scored:
    """A network's ten-view probabilities on ``x`` and the seconds they took."""
    return timed_probabilities(with_flip_tta(network, shift=shift), x)


def mean_of(scored: list[Scored]) -> Scored:
    """Networks averaged: the mean of their probabilities, at the sum of their prediction times."""
    return Scored(np.mean([s.probabilities for s in scored], axis=0), sum(s.seconds for s in scored))


def agreement(members: list[Scored], mean: Scored, y: np.ndarray) -> str:
    """How many images every member labels alike; on the rest, how many some member gets right
    (what averaging could win at most) and how many the members' mean does."""
    predictions = np.stack([m.probabilities.argmax(1) for m in members])
    alike = (predictions == predictions[0]).all(axis=0)
    some_right = int(((predictions == y) & ~alike).any(axis=0).sum())
    mean_right = int(((mean.probabilities.argmax(1) == y) & ~alike).sum())
    return (
        f"members agree on {int(alike.sum())} of {len(alike)} images ({alike.mean():.1%}); "
        f"on the other {int((~alike).sum())}, some member is right on {some_right}, their mean on {mean_right}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", help="the one network the ensemble is compared with (.keras)")
    parser.add_argument("members", nargs="+", help="the networks averaged (.keras), at least one")
    parser.add_argument("--shift", type=int, default=2, help="pixels each shifted view moves (default 2)")
    parser.add_argument("--data", help="the validation npz (default: FER_GPU_DATA or .gpu/fer-trainval.npz.xz)")
    args = parser.parse_args(argv)
    if args.shift < 1:
        parser.error(f"--shift takes whole pixels >= 1, got {args.shift}")
    networks = load_networks(
        [args.reference, *args.members]
    )  # a missing or damaged file: refused before the data loads
    data = load_data(args.data)
    x, y = data["x_val"], data["y_val"]
    reference = ten_views(networks[0], x, args.shift)
    members = {name: ten_views(network, x, args.shift) for name, network in zip(row_names(args.members), networks[1:])}
    n, members_mean = len(members), mean_of(list(members.values()))
    scored = {
        f"{label(args.reference)} (reference)": reference,
        **members,
        f"mean of the {n} member(s)": members_mean,
        f"mean of the reference and the {n} member(s)": mean_of([reference, *members.values()]),
    }
    print(f"validation: {len(y)} images; every network through ten views, shifted {args.shift} px\n")
    print("\n".join(table(y, scored, reference=f"{label(args.reference)} (reference)", compared_with="the reference")))
    if n > 1:
        print(f"\n{agreement(list(members.values()), members_mean, y)}")


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
