"""The compiled pipeline's parameters, as pipelines/settings.py checks a run's
``PARAM_<name>`` values against them: read the PipelineSpec, type each value as the
pipeline declares it, and check ranges and combinations as the components will."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fer_pipeline.errors import ConfigError
from fer_pipeline.files import parse_bool
from fer_pipeline.recipe import RECIPE_FIELDS, from_parameters, typed_field
from pipelines.settings_file import PARAM_PREFIX


def is_remote(template: str) -> bool:
    return template.startswith(("https://", "gs://"))


def load_pipeline_spec(template: str | Path) -> dict[str, Any]:
    """The first YAML document of a compiled pipeline (the PipelineSpec)."""
    path = Path(template)
    try:
        with path.open(encoding="utf-8") as handle:
            documents = [doc for doc in yaml.safe_load_all(handle) if doc]
    except (yaml.YAMLError, UnicodeDecodeError):
        documents = []
    if not documents or not isinstance(documents[0], dict) or "root" not in documents[0]:
        raise ConfigError(f"{path} is not a compiled KFP pipeline (no 'root'): run `make compile`.")
    return documents[0]


def parameter_specs(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``name -> {parameterType, defaultValue?, isOptional?}`` of the pipeline's inputs."""
    return dict(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}) or {})


def coerce(value: Any, parameter_type: str) -> Any:
    """Turn a config value (often a string) into the type the pipeline declares."""
    if parameter_type == "STRING":
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        return value if isinstance(value, str) else str(value)
    if parameter_type == "NUMBER_INTEGER":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value.strip()) if isinstance(value, str) else int(value)
    if parameter_type == "NUMBER_DOUBLE":
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if parameter_type == "BOOLEAN":
        return parse_bool(value)
    if parameter_type in ("LIST", "STRUCT"):
        parsed = json.loads(value) if isinstance(value, str) else value
        expected = list if parameter_type == "LIST" else dict
        if not isinstance(parsed, expected):
            raise ValueError(f"expected a JSON {expected.__name__}, got {value!r}")
        return parsed
    return value


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
            values[name] = coerce(value, ptype) if name != "recipe" else coerce(value, ptype) | values.get("recipe", {})
        except (ValueError, TypeError) as exc:
            problems.append((PARAM_PREFIX + name, f"{ptype}: {exc}"))
    for name, pspec in sorted(declared.items()):
        if name not in given and "defaultValue" not in pspec and not pspec.get("isOptional"):
            ptype = pspec.get("parameterType", "STRING")
            problems.append((PARAM_PREFIX + name, f"missing: required pipeline parameter {name!r} ({ptype})"))
    problems += config_problems(values, declared)
    return values, problems


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
