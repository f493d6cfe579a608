"""Step timing of Keras fit calls for the throughput benchmarks: the end time of each
training step, so that each call's warm-up steps can be left out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Timer:
    """Per-fit-call step end times, so each call's warm-up steps can be dropped."""

    ends: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.ends = []

    def images_per_second(self, batch: int, warmup: int) -> float:
        timed = self.ends[warmup - 1 :] if warmup > 0 else self.ends
        return batch * (len(timed) - 1) / (timed[-1] - timed[0])


def keras3_timer(timer: Timer):
    import keras

    class Callback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            timer.ends.append(time.perf_counter())

    return Callback()


def tf_keras_timer(timer: Timer, tf_keras):
    class Callback(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            timer.ends.append(time.perf_counter())

    return Callback()
