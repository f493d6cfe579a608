"""The champion gate both registries use (the local one in ``fer_pipeline.registry``, the
Vertex AI one in ``fer_pipeline.cloud.vertex_registry``): a new version becomes
``champion`` (and the default version) only when it beats the current champion on the
primary metric; otherwise it becomes ``challenger``."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fer_pipeline.errors import ConfigError

# The gate's warnings keep the name they were logged under before it had its own module.
log = logging.getLogger("fer_pipeline.registry")

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_PRIMARY_METRIC = "macro_f1"
# The evaluate step's metrics where higher is better: the ones the gate can compare.
GATE_METRICS = (
    "macro_f1",
    "accuracy",
    "weighted_f1",
    "macro_roc_auc",
    "public_test_accuracy",
    "private_test_accuracy",
)


def champion_gate(
    new_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None,
    metric: str = DEFAULT_PRIMARY_METRIC,
) -> bool:
    """Decide whether a new model replaces the champion.

    Args:
        new_metrics: the candidate's metrics, e.g. the evaluate step's ``metrics.json``.
        champion_metrics: the current champion's metrics, or None when there is none.
        metric: the metric compared; higher is better.

    Returns:
        True when there is no champion or the candidate is strictly better; a tie keeps
        the incumbent, so re-registering the same model never churns the alias. A NaN
        candidate never wins. A champion whose ``metric`` is missing or not a number
        cannot be compared: the candidate does not win (a warning says so), because
        replacing a champion blindly is worse than a manual promotion.

    Raises:
        ConfigError: the candidate lacks ``metric``, or it is not a number.
    """
    new_value = metric_value(new_metrics, metric, "new model")
    if math.isnan(new_value):
        log.warning("New model's %s is NaN; it cannot become champion.", metric)
        return False
    if champion_metrics is None:
        return True
    try:
        champion_value = metric_value(champion_metrics, metric, "champion")
    except ConfigError as exc:
        log.warning("%s The new model stays challenger; promote it by hand if it should win.", exc)
        return False
    return math.isnan(champion_value) or new_value > champion_value


def metric_value(metrics: Mapping[str, Any], metric: str, whose: str) -> float:
    """``metrics[metric]`` as a float, with an error naming what is there when it is not."""
    if metric not in metrics:
        scalars = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ConfigError(
            f"The {whose}'s metrics have no {metric!r}; scalar metrics present: "
            f"{', '.join(scalars) or 'none'}. Pass a primary metric that both models report."
        )
    value = metrics[metric]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"The {whose}'s metric {metric!r} is {value!r}, not a number.")
    return float(value)
