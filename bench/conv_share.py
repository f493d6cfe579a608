"""Where the frozen phase's time goes on this CPU: DenseNet169's convolutions against the rest (issue 8).

The frozen phase is, nearly all of it, the backbone's forward pass with BatchNorm in
inference mode (the head is a few Dense layers). This times, at one batch and in
interleaved rounds:

1. the whole backbone forward pass (``backbone(x, training=False)``, one tf.function);
2. every Conv2D layer of that backbone on an input of its own shape, all in one
   tf.function (the same convolutions, without the BatchNorm, ReLU, concatenation and
   pooling between them);
3. the 2048^3 float32 matmul probe of the other benchmarks.

From these: the share of the forward pass spent in convolutions, the FLOP rate of the
convolutions alone (how well oneDNN runs DenseNet's many small convolutions: 1x1 and
3x3 kernels with 32 output channels on 6x6..1x1 maps at 48x48 input) and the rate of
the whole pass, each as a share of the matmul rate. Weights are random (weights="none"):
speed does not depend on their values.

    .venv/bin/python -m bench.conv_share [--batch 64] [--rounds 3] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

from bench._common import append_section, load_average, markdown_table, matmul_gflops, median


def conv_flops(layer) -> float:
    """Multiply-adds x 2 for one image through Conv2D ``layer`` (no bias)."""
    _, height, width, channels_out = layer.output.shape
    kernel_h, kernel_w, channels_in, _ = layer.kernel.shape
    return 2.0 * height * width * kernel_h * kernel_w * channels_in * channels_out


def timed(fn, arguments, steps: int) -> float:
    """Seconds per call of ``fn(*arguments)`` over ``steps`` calls, after one warm-up call."""
    import tensorflow as tf

    tf.nest.map_structure(lambda t: t.numpy(), fn(*arguments))
    start = time.perf_counter()
    for _ in range(steps):
        result = fn(*arguments)
    tf.nest.map_structure(lambda t: t.numpy(), result)
    return (time.perf_counter() - start) / steps


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="images per call (the pipeline's default batch)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=10, help="timed calls per measurement")
    parser.add_argument("--no-append", action="store_true", help="print the table only")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    load_before = load_average()
    import keras
    import tensorflow as tf

    backbone = keras.applications.DenseNet169(include_top=False, weights=None, input_shape=(48, 48, 3))
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    flops = sum(conv_flops(layer) for layer in convs)
    images = tf.random.uniform((args.batch, 48, 48, 3))
    conv_inputs = [tf.random.uniform((args.batch, *layer.input.shape[1:])) for layer in convs]
    forward = tf.function(lambda x: backbone(x, training=False))
    convs_only = tf.function(lambda xs: [layer(x) for layer, x in zip(convs, xs)])
    print(
        f"DenseNet169 at 48x48: {len(convs)} Conv2D layers, {flops / 1e9:.3f} GFLOP per image in them; "
        f"batch {args.batch}, {args.rounds} rounds x {args.steps} calls",
        flush=True,
    )

    rows = {"forward": [], "convs": [], "matmul": []}
    for round_ in range(args.rounds):
        rows["matmul"].append(matmul_gflops())
        rows["forward"].append(timed(forward, (images,), args.steps) / args.batch)
        rows["convs"].append(timed(convs_only, (conv_inputs,), args.steps) / args.batch)
        rows["matmul"].append(matmul_gflops())
        print(
            f"round {round_ + 1}: forward {1e3 * rows['forward'][-1]:.2f} ms/img, convolutions "
            f"{1e3 * rows['convs'][-1]:.2f} ms/img, matmul {rows['matmul'][-1]:.0f} GFLOP/s",
            flush=True,
        )

    matmul = median(rows["matmul"])
    forward_s, convs_s = median(rows["forward"]), median(rows["convs"])
    table = markdown_table(
        ["measured (medians)", "ms per image", "images/s", "GFLOP/s (conv FLOPs / time)", "share of matmul rate"],
        [
            [
                "whole backbone forward pass",
                f"{1e3 * forward_s:.2f}",
                f"{1 / forward_s:.0f}",
                f"{flops / forward_s / 1e9:.0f}",
                f"{flops / forward_s / 1e9 / matmul:.0%}",
            ],
            [
                "its Conv2D layers alone",
                f"{1e3 * convs_s:.2f}",
                f"{1 / convs_s:.0f}",
                f"{flops / convs_s / 1e9:.0f}",
                f"{flops / convs_s / 1e9 / matmul:.0%}",
            ],
            [
                "everything else (difference)",
                f"{1e3 * (forward_s - convs_s):.2f}",
                "",
                "",
                f"{(forward_s - convs_s) / forward_s:.0%} of the forward time",
            ],
            ["float32 matmul 2048^3", "", "", f"{matmul:.0f}", "100%"],
        ],
    )
    notes = [
        f"DenseNet169 (weights none), 48x48x3, batch {args.batch}, {len(convs)} Conv2D layers, "
        f"{flops / 1e9:.3f} GFLOP per image in them; {args.rounds} interleaved rounds x {args.steps} calls"
    ]
    if args.no_append:
        print(table)
    else:
        append_section(
            "Where the frozen phase's time goes: DenseNet169's convolutions vs the rest",
            table,
            load_before=load_before,
            notes=notes,
        )
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
