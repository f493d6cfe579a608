"""Shared helpers of the benchmarks: machine description, the float32 matmul probe,
model FLOPs from TensorFlow's profiler, and appending a result table to
docs/benchmarks.md.

Every benchmark prints one Markdown table and appends it, with the machine, the load
average before and after, and the exact command, to docs/benchmarks.md. The machine
is shared with other engineers' test runs, so each benchmark measures the things it
compares in the same run, interleaved, and records the load.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
DEFAULT_ZIP = Path(os.environ.get("FER2013_ZIP", REPO_ROOT.parent / "shared" / "data" / "fer2013" / "fer2013.zip"))
MATMUL_SIDE = 2048  # a float32 matmul this large runs near the cores' peak


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# The CPU flags that decide which kernels oneDNN runs and what precision=auto picks
DECISIVE_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags_line() -> str:
    """The decisive CPU flags, present and absent (as precision=auto sees them)."""
    from fer_pipeline.precision import cpu_flags

    flags = cpu_flags()
    present = [flag for flag in DECISIVE_FLAGS if flag in flags]
    absent = [flag for flag in DECISIVE_FLAGS if flag not in flags]
    return (
        f"CPU flags: {' '.join(present) or 'none of ' + ', '.join(DECISIVE_FLAGS)}"
        + (f"; absent: {' '.join(absent)}" if absent else "")
        + " (of those deciding oneDNN's kernels and precision=auto; `lscpu` lists all)"
    )


def load_average() -> str:
    """`uptime`'s three load averages (1, 5, 15 min), as text."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def machine() -> str:
    """One line: CPU, cores, memory, TensorFlow and Keras versions."""
    import keras
    import tensorflow as tf

    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * size / 2**30:.0f} GiB"
    except (ValueError, OSError):
        memory = ""
    gpus = tf.config.list_physical_devices("GPU")
    return (
        f"{cpu_model()}, {os.cpu_count()} cores{memory}, {len(gpus)} GPU; "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {platform.python_version()}"
    )


def matmul_gflops(side: int = MATMUL_SIDE, repeats: int = 3) -> float:
    """Measured float32 matmul rate of this machine now, in GFLOP/s (2 * side^3 per product).

    ``repeats`` products after one warm-up, timed together: the rate the cores reach on
    the most efficient dense kernel TensorFlow has, under the load of the moment (the
    benchmarks take it right before and after each timed window, so that a busy machine
    slows both sides of the ratio alike).
    """
    import tensorflow as tf

    a = tf.random.stateless_normal((side, side), seed=(1, 2))
    b = tf.random.stateless_normal((side, side), seed=(3, 4))
    product = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)))
    product(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        product(a, b).numpy()
    return 2 * side**3 * repeats / (time.perf_counter() - start) / 1e9


def forward_flops(model, image_shape: Sequence[int]) -> dict[str, float]:
    """Forward FLOPs per image of ``model`` by TensorFlow's profiler (float_ops), split by role.

    Returns:
        ``total``: all counted ops; ``weighted``: convolutions and matmuls (the ops that
        get a weight gradient when trainable); ``first_conv``: the backbone's first
        convolution (whose input gradient training never needs); ``head``: the Dense
        layers after the backbone. All in FLOPs for one image.
    """
    import tensorflow as tf
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((1, *image_shape), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    total = tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=options).total_float_ops
    weighted = first_conv = head = 0.0
    for op in graph.get_operations():
        if op.type not in ("Conv2D", "MatMul", "DepthwiseConv2dNative"):
            continue
        try:
            flops = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value or 0
        except ValueError:  # no statistics registered for this op
            continue
        weighted += flops
        if "conv1_conv" in op.name or "conv1/conv" in op.name:
            first_conv += flops
        if op.type == "MatMul":
            head += flops
    return {"total": float(total), "weighted": weighted, "first_conv": first_conv, "head": head}


def training_flops(forward: dict[str, float], phase: str) -> float:
    """FLOPs to train on one image: the forward pass plus the gradients that phase needs.

    Frozen backbone: forward + the head's input and weight gradients (2x its forward).
    Backbone unfrozen: forward + weight gradients of every conv/matmul (1x each) + input
    gradients of all but the first convolution (1x each), i.e. almost 3x forward.
    """
    if phase == "frozen":
        return forward["total"] + 2 * forward["head"]
    return forward["total"] + 2 * forward["weighted"] - forward["first_conv"]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    """The command that ran this benchmark, as typed from the repository root."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        module = Path(argv[0]).resolve().relative_to(REPO_ROOT).with_suffix("")
        argv[0] = "-m " + ".".join(module.parts)
    return ".venv/bin/python " + " ".join([argv[0]] + [shlex.quote(a) for a in argv[1:]])


def append_section(title: str, table: str, *, load_before: str, notes: Sequence[str] = (), path: Path = DOCS) -> None:
    """Print ``table`` and append it to docs/benchmarks.md under ``title`` with the
    date, machine, load averages and the command."""
    load_after = load_average()
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    cores = os.cpu_count() or 1
    busy = max(float(load_before.split(",")[0]), float(load_after.split(",")[0])) > 0.5 * cores
    section = [
        f"### {title} ({stamp})",
        "",
        f"- command: `{command_line()}`",
        f"- machine: {machine()}",
        f"- {cpu_flags_line()}",
        f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after}"
        + (" (machine shared with other test runs while measuring)" if busy else ""),
        *[f"- {note}" for note in notes],
        "",
        table,
        "",
    ]
    text = "\n".join(section)
    print("\n" + text)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as out:  # append only: other benchmarks add their own sections
        out.write("\n" + text)
