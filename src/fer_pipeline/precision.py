"""The Keras dtype policy a run trains under: ``TrainConfig.precision`` resolved against
the hardware, in one backend-neutral place that both feeds call (``feed_tf`` and
``feed_numpy``'s ``prepare``).

``choose_policy`` is a pure function of the requested precision, the CPU's flags (as
/proc/cpuinfo lists them) and the visible GPUs' compute capabilities, so it is tested
with faked hardware (tests/test_precision.py). ``apply_precision`` gathers the real
hardware for the running Keras backend, sets the global policy and logs the choice;
the trainer records the policy in each phase's history.json.

``auto``:

- GPUs: ``mixed_bfloat16`` when every visible GPU has compute capability 8.0 or more
  (Ampere and later: bfloat16 tensor cores, no loss scaling needed), ``mixed_float16``
  on older GPUs or when the capability cannot be read (the project's previous default);
- CPUs: ``mixed_bfloat16`` with AMX (``amx_bf16``) or AVX-512-BF16 (``avx512_bf16``),
  ``float32`` otherwise. Measured on this project's 2-core AMD EPYC (avx512_bf16, no
  AMX): bfloat16 trains the compact preset's step 1.44x as fast as float32 on
  TensorFlow (a whole epoch 1.28x, bench/epoch_iterators.py; 1.08x on JAX) and runs DenseNet169's frozen phase 1.21x as fast
  (docs/benchmarks.md, "Precision and the frozen feature cache"); so auto makes
  nothing slower there. A model keeps the policy it was built under in model.keras.

The deprecated ``mixed_precision`` field is resolved here and nowhere else:
``mixed_precision=false`` with ``precision=auto`` means ``float32`` (what it meant
before: no mixed precision); with any explicit ``precision`` it is ignored.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from fer_pipeline.config import PRECISIONS, TrainConfig

logger = logging.getLogger(__name__)

# CPU flags that make bfloat16 worth it for auto (measured faster with avx512_bf16 alone: module docstring)
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
BF16_GPU_CAPABILITY = (8, 0)  # Ampere: bfloat16 tensor cores

Capability = tuple[int, int] | None  # a GPU's compute capability; None = unknown


def requested_precision(cfg: TrainConfig) -> str:
    """``cfg.precision``, with the deprecated ``mixed_precision=false`` folded in (module docstring)."""
    if cfg.precision == "auto" and not cfg.mixed_precision:
        return "float32"
    return cfg.precision


def choose_policy(
    precision: str, *, cpu_flags: Iterable[str] = (), gpu_capabilities: Sequence[Capability] = ()
) -> tuple[str, str]:
    """The Keras dtype policy for ``precision`` on this hardware, and why.

    Args:
        precision: One of ``PRECISIONS``; anything but ``auto`` is taken as it is.
        cpu_flags: The CPU's feature flags (``/proc/cpuinfo``'s "flags" line, split).
        gpu_capabilities: One entry per visible GPU: its compute capability as
            ``(major, minor)``, or None when unknown. Empty: no GPU.

    Returns:
        ``(policy, reason)``: a policy name for ``keras.mixed_precision.set_global_policy``
        and one line saying why, for the log.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision, "asked for"
    if gpu_capabilities:
        known = [c for c in gpu_capabilities if c is not None]
        if len(known) == len(gpu_capabilities) and min(known) >= BF16_GPU_CAPABILITY:
            shown = ", ".join(f"{major}.{minor}" for major, minor in known)
            return "mixed_bfloat16", f"auto: GPU compute capability {shown} >= 8.0"
        return "mixed_float16", "auto: a GPU below compute capability 8.0 (or of unknown capability)"
    flags = set(cpu_flags)
    found = [flag for flag in CPU_BF16_FLAGS if flag in flags]
    if found:
        return "mixed_bfloat16", f"auto: CPU without GPU, with {', '.join(found)}"
    return "float32", "auto: CPU without AMX or AVX-512-BF16"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):  # x86, ARM
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def nvidia_gpu_visible() -> bool:
    """Whether an NVIDIA driver is loaded (its control device), without starting a backend."""
    return Path("/dev/nvidiactl").exists()


def gpu_capabilities() -> list[Capability]:
    """Compute capability of each GPU the running Keras backend sees (None where unknown).

    The backend's own package is taken from ``sys.modules``: Keras imported it already, and
    naming it here would make every image look as if it needed all three backends."""
    import keras

    backend = keras.backend.backend()
    module = sys.modules.get(backend)
    if module is None:
        return []
    if backend == "tensorflow":
        found: list[Capability] = []
        for gpu in module.config.list_physical_devices("GPU"):
            try:
                found.append(_capability(module.config.experimental.get_device_details(gpu).get("compute_capability")))
            except Exception:  # a device TensorFlow cannot describe
                found.append(None)
        return found
    if backend == "jax":
        return [_capability(getattr(d, "compute_capability", None)) for d in module.devices() if d.platform == "gpu"]
    if backend == "torch":
        cuda = module.cuda
        return [_capability(cuda.get_device_capability(i)) for i in range(cuda.device_count())]
    return []


def _capability(value) -> Capability:
    """``(major, minor)`` from a tuple or a "8.0" string; None for anything else."""
    try:
        parts = value.split(".") if isinstance(value, str) else list(value)
        return int(parts[0]), int(parts[1])
    except (AttributeError, TypeError, ValueError, IndexError):
        return None


def apply_precision(cfg: TrainConfig, gpus: Sequence[Capability] | None = None) -> str:
    """Set the global Keras dtype policy ``cfg`` asks for on this machine; returns its name.

    ``gpus``: the GPUs' capabilities when the caller has them (default: ``gpu_capabilities()``).
    """
    import keras  # here, not at the top: run-local reads cpu_flags without loading a backend

    wanted = requested_precision(cfg)
    gpus = gpu_capabilities() if gpus is None else gpus
    policy, reason = choose_policy(wanted, cpu_flags=cpu_flags(), gpu_capabilities=gpus)
    keras.mixed_precision.set_global_policy(policy)
    logger.info("Precision: dtype policy %s (precision=%s; %s).", policy, cfg.precision, reason)
    if policy == "mixed_float16" and not gpus:
        logger.warning("mixed_float16 on a CPU: float16 arithmetic is emulated there and slow.")
    return policy
