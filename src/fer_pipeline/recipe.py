"""The training recipe: a preset name plus overrides, resolved once into the typed configs.

A run's recipe crosses the pipeline as two pipeline parameters, ``preset`` (a name from
``fer_pipeline.presets``, "" for none) and ``recipe`` (a dict of ``TrainConfig`` /
``SplitConfig`` field overrides), and every step that needs a config calls ``resolve``
on them: the CLI, ``make run-local``, ``make submit``'s checks and the split and training
components. Precedence: field defaults, then the preset, then the overrides.

Why a name plus overrides rather than the whole resolved config as one dict: the Vertex
console's parameter panel then shows what the user chose (``preset=cpu``,
``recipe={"frozen_epochs": 5}``) instead of forty values of which two were chosen, and a
new ``TrainConfig`` field needs no pipeline change at all. The cost: the preset is read
by the component's image, so a compiled pipeline means what the images it names mean
(they are tagged by commit, so that is one tree). The resolved config is recorded
whole in each phase's history, in the run record and the experiment's parameters, and as
metadata of each training step's model artifact.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fer_pipeline.config import SplitConfig, TrainConfig, config_from_dict
from fer_pipeline.errors import ConfigError
from fer_pipeline.presets import PRESETS

TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
SPLIT_FIELDS = frozenset(f.name for f in dataclasses.fields(SplitConfig))
RECIPE_FIELDS = TRAIN_FIELDS | SPLIT_FIELDS  # "seed" is in both: one seed for the split and training
# Per-task settings, not part of what a run trains: each component sets them itself.
NOT_RECIPE = frozenset({"backup_dir"})


@dataclass(frozen=True)
class Recipe:
    """A resolved recipe: what was asked for, and the configs it means."""

    preset: str
    overrides: dict[str, Any]
    train: TrainConfig
    split: SplitConfig

    def to_dict(self) -> dict[str, Any]:
        """Every field's value, for records: the TrainConfig's, plus ``val_fraction`` and
        the other split fields (``seed`` is shared)."""
        values = {k: v for k, v in self.train.to_dict().items() if k not in NOT_RECIPE}
        return values | dataclasses.asdict(self.split)

    def params(self) -> dict[str, Any]:
        """A run record's parameters: every resolved field, plus what was asked for
        (``preset``, and ``recipe``: the overrides)."""
        return self.to_dict() | {"preset": self.preset, "recipe": self.overrides}


def typed_field(name: str, value: Any) -> Any:
    """``value`` (text from a settings file, say) typed as recipe field ``name`` holds it."""
    cls = TrainConfig if name in TRAIN_FIELDS else SplitConfig
    return getattr(config_from_dict(cls, {name: value}), name)


def preset_values(name: str) -> dict[str, Any]:
    """The field values of preset ``name``; "" is no preset (empty)."""
    if not name:
        return {}
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ConfigError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)} (or none).") from None


def overrides_from(value: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """The ``recipe`` parameter as a dict: a mapping, a JSON object string, or empty."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"recipe must be a JSON object of field overrides, got {value!r} ({exc.msg}).") from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"recipe must be a JSON object of field overrides, got {value!r}.")
    return dict(value)


def resolve(preset: str = "", overrides: Mapping[str, Any] | str | None = None) -> Recipe:
    """The configs that preset ``preset`` with ``overrides`` means; ConfigError names an
    unknown preset, an unknown field or a bad value."""
    chosen = overrides_from(overrides)
    unknown = sorted(set(chosen) - RECIPE_FIELDS - NOT_RECIPE)
    if unknown:
        raise ConfigError(
            f"Unknown recipe field(s): {', '.join(unknown)}; the fields are TrainConfig's and SplitConfig's "
            "(fer_pipeline/config.py, listed in README's recipe table)."
        )
    values = preset_values(preset) | chosen
    train = config_from_dict(TrainConfig, {k: v for k, v in values.items() if k in TRAIN_FIELDS})
    split = config_from_dict(SplitConfig, {k: v for k, v in values.items() if k in SPLIT_FIELDS})
    return Recipe(preset=preset, overrides=chosen, train=train, split=split)


def fold(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Pipeline parameters with every recipe field (``frozen_epochs=5``) moved into the
    ``recipe`` dict, so that settings files and ``--param`` may name fields directly;
    a field given both ways keeps the direct value."""
    folded = {k: v for k, v in parameters.items() if k not in RECIPE_FIELDS}
    direct = {k: v for k, v in parameters.items() if k in RECIPE_FIELDS}
    if direct or "recipe" in parameters:
        folded["recipe"] = overrides_from(parameters.get("recipe")) | direct
    return folded


def from_parameters(parameters: Mapping[str, Any]) -> Recipe:
    """The recipe a run's pipeline parameters (folded or not) resolve to, as every step resolves it."""
    folded = fold(parameters)
    return resolve(str(folded.get("preset") or ""), folded.get("recipe"))


def minimal_overrides(preset: str, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """Of ``wanted`` field values, those that differ from what ``preset`` alone resolves
    to: the overrides a run needs, and all the parameter panel has to show."""
    base = resolve(preset).to_dict()
    changed = resolve(preset, wanted).to_dict()
    return {k: wanted[k] for k in wanted if changed[k] != base[k]}
