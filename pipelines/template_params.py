"""The compiled pipeline's parameters, as pipelines/settings.py checks a run's
``PARAM_<name>`` values against them: read the PipelineSpec, type each value as the
pipeline declares it, and check ranges and combinations as the components will."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fer_pipeline.champion import GATE_METRICS
from fer_pipeline.errors import ConfigError
from fer_pipeline.files import parse_bool
from fer_pipeline.recipe import RECIPE_FIELDS, from_parameters, typed_field
from pipelines.resources import MAX_GPUS
from pipelines.settings_file import PARAM_PREFIX


def is_remote(template: str) -> bool:
    return template.startswith(("https://", "gs://"))


def load_pipeline_documents(template: str | Path) -> list[dict[str, Any]]:
    """The YAML documents of a compiled pipeline: the PipelineSpec, then (the KFP file only)
    the kfp-kubernetes platform spec."""
    path = Path(template)
    try:
        with path.open(encoding="utf-8") as handle:
            documents = [doc for doc in yaml.safe_load_all(handle) if doc]
    except (yaml.YAMLError, UnicodeDecodeError):
        documents = []
    if not documents or not isinstance(documents[0], dict) or "root" not in documents[0]:
        raise ConfigError(f"{path} is not a compiled KFP pipeline (no 'root'): run `make compile`.")
    return documents


def load_pipeline_spec(template: str | Path) -> dict[str, Any]:
    """The first YAML document of a compiled pipeline (the PipelineSpec)."""
    return load_pipeline_documents(template)[0]


def compiled_for(documents: list[dict[str, Any]]) -> str:
    """ "kfp" for the KFP file (a second document, the platform spec: GPU pool, volumes),
    "vertex" for the Vertex file (the PipelineSpec alone: aiplatform loads one document)."""
    return "kfp" if any(isinstance(doc, dict) and "platforms" in doc for doc in documents[1:]) else "vertex"


# the file each target runs, as `make compile` names it
TEMPLATE_FILES = {"vertex": "build/pipeline.yaml", "kfp": "build/pipeline-kfp.yaml"}
_TARGET_NAMES = {"vertex": "Vertex", "kfp": "KFP"}


def wrong_template(template: str | Path, documents: list[dict[str, Any]], wanted: str) -> str | None:
    """Why ``template`` is the other target's file (``wanted``: "vertex" or "kfp"), or None."""
    found = compiled_for(documents)
    if found == wanted:
        return None
    return (
        f"{template} is the {_TARGET_NAMES[found]} file; {_TARGET_NAMES[wanted]} takes "
        f"{TEMPLATE_FILES[wanted]} (`make compile` writes both)"
    )


def parameter_specs(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``name -> {parameterType, defaultValue?, isOptional?}`` of the pipeline's inputs."""
    return dict(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}) or {})


def coerce(value: Any, parameter_type: str) -> Any:
    """Turn a config value (often a string) into the type the pipeline declares."""
    if parameter_type == "STRING":
        # a JSON/YAML file's number, list, mapping or unquoted yes/no would be sent as its Python text
        if not isinstance(value, str):
            raise ValueError(f"expected text, got {_kind_of(value)}; quote it in the settings file if it is text")
        return value
    if parameter_type == "NUMBER_INTEGER":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value.strip()) if isinstance(value, str) else int(value)
    if parameter_type == "NUMBER_DOUBLE":
        number = float(value) if not isinstance(value, bool) else math.nan
        if not math.isfinite(number):  # a request cannot carry NaN or infinity
            raise ValueError(f"expected a finite number, got {value!r}")
        return number
    if parameter_type == "BOOLEAN":
        return parse_bool(value)
    if parameter_type in ("LIST", "STRUCT"):
        parsed = json.loads(value) if isinstance(value, str) else value
        expected = list if parameter_type == "LIST" else dict
        if not isinstance(parsed, expected):
            raise ValueError(f"expected a JSON {expected.__name__}, got {value!r}")
        return parsed
    return value


def _kind_of(value: Any) -> str:
    kinds = {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "a mapping"}
    return f"{kinds.get(type(value), type(value).__name__)} ({json.dumps(value, default=str)})"


def resolve_parameters(
    given: Mapping[str, Any], declared: Mapping[str, dict[str, Any]]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Typed values for ``given`` against the pipeline's ``declared`` inputs, and the problems."""
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    if "recipe" in declared:  # recipe fields may be given by name: PARAM_frozen_epochs=5
        fields = {name: value for name, value in given.items() if name in RECIPE_FIELDS}
        given = {name: value for name, value in given.items() if name not in RECIPE_FIELDS}
        for name, value in sorted(fields.items()):
            try:
                values.setdefault("recipe", {})[name] = typed_field(name, value)
            except ConfigError as exc:
                problems.append((PARAM_PREFIX + name, str(exc)))
    for name, value in sorted(given.items()):
        if name not in declared:
            problems.append(
                (PARAM_PREFIX + name, f"the pipeline has no parameter {name!r} (it has: {', '.join(sorted(declared))})")
            )
            continue
        ptype = declared[name].get("parameterType", "STRING")
        try:
            typed = coerce(value, ptype)
        except (ValueError, TypeError) as exc:
            problems.append((PARAM_PREFIX + name, f"{ptype}: {exc}"))
            continue
        if name == "recipe":  # fields given by name join it; one given both ways must agree
            by_name = values.get("recipe", {})
            problems += [
                (PARAM_PREFIX + field, f"{by_name[field]!r} here, {typed[field]!r} in PARAM_recipe; give it once")
                for field in sorted(set(typed) & set(by_name))
                if typed[field] != by_name[field]
            ]
            typed = typed | by_name
        values[name] = typed
    for name, pspec in sorted(declared.items()):
        if name not in given and "defaultValue" not in pspec and not pspec.get("isOptional"):
            ptype = pspec.get("parameterType", "STRING")
            problems.append((PARAM_PREFIX + name, f"missing: required pipeline parameter {name!r} ({ptype})"))
    problems += config_problems(values, declared)
    problems += pipeline_problems(values)
    return values, problems


def _gpu_types() -> list[str]:
    from google.cloud.aiplatform_v1.types import accelerator_type

    return [name for name in accelerator_type.AcceleratorType.__members__ if name != "ACCELERATOR_TYPE_UNSPECIFIED"]


# The pipeline's own parameters (not the recipe's): what each must be, checked here because
# a wrong one would fail only at its step, after the training (register, the GPU request).
PIPELINE_CHECKS: dict[str, tuple[Any, str]] = {
    "accuracy_threshold": (lambda v: 0.0 <= v <= 1.0, "an accuracy in [0, 1]"),
    "gpu_count": (lambda v: 0 <= v <= MAX_GPUS, f"a GPU count per machine from 0 to {MAX_GPUS}"),
    "finetune_replicas": (lambda v: v >= 1, "1 or more machines"),
    "primary_metric": (lambda v: v in GATE_METRICS, "one of " + ", ".join(GATE_METRICS) + " (higher is better)"),
    "gpu_type": (lambda v: v in _gpu_types(), "a Vertex AI accelerator type such as NVIDIA_TESLA_T4 or NVIDIA_L4"),
}


def pipeline_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The given pipeline parameters outside what ``PIPELINE_CHECKS`` allows, each named."""
    return [
        (PARAM_PREFIX + name, f"must be {what}, got {values[name]!r}")
        for name, (allowed, what) in PIPELINE_CHECKS.items()
        if name in values and not allowed(values[name])
    ]


def config_problems(values: Mapping[str, Any], declared: Mapping[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Ranges and combinations, checked here as the components will check them: the typed
    configs built from the run's parameters (given, else the compiled defaults), so that a
    bad value fails on the laptop and not an hour into the run."""
    effective = {name: spec["defaultValue"] for name, spec in declared.items() if "defaultValue" in spec} | dict(values)
    try:
        from_parameters(effective)
    except ConfigError as exc:
        # the parameter the message names: one the user gave first, the longest name first
        given = set(values) | set(values.get("recipe") or {})
        candidates = set(effective) | set(effective.get("recipe") or {})
        named = sorted((name for name in candidates if name in str(exc)), key=lambda n: (n not in given, -len(n)))
        return [(PARAM_PREFIX + named[0] if named else "parameters", str(exc))]
    return []
