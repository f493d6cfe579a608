"""Named recipes, keyed by ``TrainConfig`` / ``SplitConfig`` field name; resolved by
``fer_pipeline.recipe``. Chosen with ``make run-local PRESET=cpu``, ``fer-pipeline run
--preset cpu`` or the pipeline parameter ``preset=cpu`` on Vertex and KFP.

``cpu``: the compact CNN trained from scratch, sized to train on a 2-core CPU in under
two hours: run 4's recipe (test accuracy 0.686, macro-F1 0.670 in 100 minutes of
float32 training) with the random resized crop and the epochs bfloat16 buys (run 5:
0.697 / 0.686 in 90 minutes), ending with the mean of its last 20 epochs' weights (run 7:
0.693 / 0.679, +0.014 / +0.015 over the same trajectory's best epoch in run 6), the
schedule run to its end so that mean is of its low-rate tail (run 8: 0.693 / 0.684),
test-time views shifted 2 pixels rather than 1 (chosen on validation; run 9: 0.698 / 0.684 in
82 minutes), and 100 epochs in the time one training iterator per phase saved (run 10:
0.6995 / 0.687 in 66 minutes). Since run 12 it also trains on its validation images, which
its schedule no longer chooses anything on, and ends within a 110-minute budget on hosts
too slow for its 100 epochs (docs/model-quality.md).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "backbone": "compact",
        "weights": "none",
        "compact_widths": [16, 64, 128, 256],  # a 16-filter first block: 18% fewer FLOPs, spent on epochs
        "batch_size": 128,
        "val_fraction": 0.1,  # 10% of train is enough to select on (2,871 images) and leaves more to learn from
        # ...and since the schedule below chooses nothing on validation (cosine to its end, never stopped
        # early, the last 20 epochs' mean), those 2,871 images train too: 11% more images, 11% longer
        # epochs. Chosen before its test run (run 12) and without a validation measurement, which the
        # option rules out by design; every recipe choice above was made with them held out.
        "train_on_validation": True,
        # From scratch the whole network trains in phase 1; cosine decay over the phase. Run 9's 69 were
        # run 4's 48 epochs x the 1.44x faster bfloat16 step (precision=auto on CPUs with avx512_bf16 or
        # AMX); one training iterator per phase then cut the epoch from 71 s to 45 s on the AMD host, and
        # 100 epochs (75 minutes there) gained on validation: ten views 0.7029 / 0.6838 accuracy /
        # macro-F1 against run 9's 0.6890 / 0.6752 (seed 12; docs/model-quality.md).
        "frozen_epochs": 100,
        # ...at most: the same 2 AMD cores have run these epochs at 40 s and at 95 s on different days,
        # so the phase ends by the epoch that fits in 110 minutes (the two hours, less a margin
        # for the last epoch and the average), its cosine re-planned to end there (time_budget.py).
        "time_budget_minutes": 110,
        "frozen_lr": 1e-3,
        # No second phase: nothing is frozen to release, and run 3's 2 epochs at 1e-4 raised the
        # validation loss (1.194 -> 1.203); their ~4 minutes went to phase 1 instead.
        "finetune_epochs": 0,
        "finetune_lr": 1e-4,
        # Never stops early: the average below is meant for the cosine schedule's low-rate tail. At seeds
        # 13 / 14 (best epoch 52) patience 20 never fired and the last-20 mean gained on validation; at seed
        # 12 on AMX (best epoch 36) it fired at epoch 56, rate still ~1e-4, and run 7 averaged mid-schedule
        # weights (epochs 37-56). 10 had stopped a longer cosine run at epoch 40 of 96.
        "early_stopping_patience": 100,
        # The mean of the last 20 epochs' weights, not the one best epoch (run 6 kept epoch 36 of 56): on
        # validation with ten views +0.000 / +0.010 accuracy and +0.003 / +0.014 macro-F1 at seeds 13 / 14,
        # the best mean accuracy of the averages measured (docs/model-quality.md).
        "average_last_epochs": 20,
        # Flip and shift only: in the GPU sweep rotation and zoom added nothing, and here each is one
        # more bilinear resampling of every training image (sharpness 0.69 of the original after the
        # shift, 0.44 after rotation and zoom), which the unaugmented test images never see.
        "rotation": 0.0,
        "zoom": 0.0,
        # The anchors' random resized crop, in the same single resampling as flip and shift: on
        # validation +0.010 ten-view accuracy and +0.018 macro-F1, the best single change measured.
        "crop_scale": [0.8, 1.2],
        "label_smoothing": 0.1,
        "class_weighting": True,
        "class_weight_power": 0.5,  # square-root weights: disgust (1.5% of images) gets found, accuracy kept
        "schedule": "cosine",
        "tta": True,
        # 10 views, shifted 2 px: on the crop-trained networks (runs 6-8, seed 14's) +0.002 to +0.009
        # validation accuracy over 1 px, which no longer beat the mirror alone (1 px won on run 3's model)
        "tta_shift": 2,
        # Not beside them the ten crops (20 views, tta_crops=0.8), at twice the cost: on validation
        # +0.0033 / +0.0015 accuracy / macro-F1 on the 100-epoch networks (seeds 12, 13), under the
        # +0.004 / +0.003 asked, and +0.0007 on a fresh seed's 130-epoch one (docs/model-quality.md).
    },
}

# Presets whose epochs were sized for bfloat16's faster step, and the epochs that keep their
# time on a CPU without it (float32): run 4's 48 took 100 minutes on an AVX2-only 2-core host;
# with the validation images in training (11% more per epoch) 43 take as long.
# run-local and `fer-pipeline run` say so (float32_epochs_note).
FLOAT32_CPU_EPOCHS: dict[str, int] = {"cpu": 43}
# The compact preset's float32 epoch on 2 cores, in minutes, from two measurements: the AMD EPYC
# host's 40 s bfloat16 epoch (run 10) x float32's 1.28x step there with one training iterator
# (bench/epoch_iterators.py), and run 4's epochs on the AVX2-only host, one iterator per epoch
# (48 in 100 minutes). Other CPUs fall anywhere between or beyond; docs/benchmarks.md.
FLOAT32_EPOCH_MINUTES = (40 * 1.28 / 60, 100 / 48)
# Those epochs trained on 90% of the training images (validation held out); a preset with
# train_on_validation trains on all of them, so its epochs take 1 / 0.9 as long.
MEASURED_TRAIN_SHARE = 0.9


def float32_epochs_note(
    preset: str,
    frozen_epochs: int,
    precision: str,
    epochs_option: str,
    time_budget_minutes: float = 0.0,
    cpu_flags: frozenset[str] | None = None,
    gpu: bool | None = None,
) -> str:
    """One line when ``preset``, whose epochs were sized for bfloat16, trains its own epochs in
    float32 because ``precision`` is ``auto`` on a CPU without avx512_bf16 or AMX and no GPU:
    their time there (FLOAT32_EPOCH_MINUTES), then what keeps it: ``time_budget_minutes``
    where the run has one, else ``epochs_option`` (``EPOCHS=`` for make, ``--frozen-epochs ``
    for the CLI) with FLOAT32_CPU_EPOCHS. "" otherwise, or when the user chose the epochs or
    the precision."""
    from fer_pipeline import precision as precisions

    keep = FLOAT32_CPU_EPOCHS.get(preset)
    if keep is None or frozen_epochs != PRESETS[preset].get("frozen_epochs") or precision != "auto":
        return ""
    if precisions.nvidia_gpu_visible() if gpu is None else gpu:
        return ""
    flags = precisions.cpu_flags() if cpu_flags is None else cpu_flags
    if precisions.choose_policy("auto", cpu_flags=flags)[0] != "float32":
        return ""
    images = 1 / MEASURED_TRAIN_SHARE if PRESETS[preset].get("train_on_validation") else 1.0
    fast, slow = (minutes * images * frozen_epochs / 60 for minutes in FLOAT32_EPOCH_MINUTES)
    if time_budget_minutes:
        remedy = (
            f"Its {time_budget_minutes:g}-minute time budget (time_budget_minutes) ends training at the last epoch "
            "that fits, so it may train fewer here, for a weaker model than bfloat16's."
        )
    else:
        remedy = f"{epochs_option}{keep} keeps the earlier preset's 100 minutes on the slowest of them."
    return (
        f"Note: this CPU has neither avx512_bf16 nor AMX, so preset {preset} trains in float32, where its "
        f"{frozen_epochs} epochs (sized for bfloat16) take ~{fast:.1f} to ~{slow:.1f} h on 2 cores at the float32 paces "
        f"measured. {remedy}"
    )
