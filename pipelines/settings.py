"""Submission settings: one small typed dataclass, built once from a config file, the
environment and command-line overrides (in rising precedence).

Keys (config file lines ``KEY=VALUE``, environment variables of the same name, or
``--set KEY=VALUE``); config/submit.example.env documents each one:

    PROJECT REGION PIPELINE_ROOT SERVICE_ACCOUNT NETWORK ENCRYPTION_KEY
    LABELS ENABLE_CACHING EXPERIMENT TENSORBOARD DISPLAY_NAME JOB_ID TEMPLATE
    TEMPLATE_REPOSITORY TEMPLATE_TAGS  (make publish)
    KFP_HOST KFP_NAMESPACE KFP_EXPERIMENT KFP_SERVICE_ACCOUNT KFP_PIPELINE_ROOT KFP_TEMPLATE
    REGISTRY REPO  (read by make only: image names for build/push/compile)
    PARAM_<name>   one pipeline parameter (e.g. PARAM_data_source=gs://bucket/fer2013.zip)

The config file is ``.env`` style (``KEY=VALUE``, ``#`` comments, optional quotes; read
with python-dotenv, pipelines/settings_file.py says why that library), or JSON/YAML
(``.json``, ``.yaml``, ``.yml``) with the same keys at the top level and the pipeline
parameters under ``parameters:``. Missing or invalid settings are reported in ONE error
that lists each of them and where to set it.

Modules: pipelines/settings_file.py reads and writes the file, pipelines/template_params.py
checks the parameters against the compiled pipeline, pipelines/settings_cli.py is the
command line (``from-terraform``, ``show``, and ``make-vars``: the values mk/cloud.mk
reads, so make and Python read the file with this one loader). The names they define
stay importable from here.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_pipeline.errors import ConfigError
from fer_pipeline.files import parse_bool
from pipelines.settings_file import (
    DEFAULT_CONFIG,
    DEFAULT_KFP_HOST,
    EXAMPLE,
    KEYS,
    PARAM_PREFIX,
    TERRAFORM_OUTPUTS,
    known_key,
    merge_sources,
    read_config,
    read_env_file,
    terraform_values,
    update_env_file,
)
from pipelines.template_params import (
    TEMPLATE_FILES,
    coerce,
    config_problems,
    is_remote,
    load_pipeline_documents,
    load_pipeline_spec,
    parameter_specs,
    resolve_parameters,
    wrong_template,
)

__all__ = [
    "AUTO_PARAMETERS",
    "DEFAULT_CONFIG",
    "DEFAULT_KFP_HOST",
    "DEFAULT_TEMPLATES",
    "KEYS",
    "MAKE_KEYS",
    "PARAM_PREFIX",
    "REQUIRED",
    "TARGETS",
    "TERRAFORM_OUTPUTS",
    "ConfigError",
    "SettingsError",
    "SubmitSettings",
    "known_key",
    "cli_overrides",
    "coerce",
    "config_problems",
    "is_remote",
    "load_pipeline_spec",
    "load_settings",
    "make_values",
    "parameter_specs",
    "parse_bool",
    "parse_labels",
    "parse_pairs",
    "read_config",
    "read_env_file",
    "resolve_parameters",
    "terraform_values",
    "update_env_file",
]

TARGETS = ("vertex", "kind")
DEFAULT_TEMPLATES = {"vertex": TEMPLATE_FILES["vertex"], "kind": TEMPLATE_FILES["kfp"]}
REQUIRED = {
    "vertex": ("PROJECT", "REGION", "PIPELINE_ROOT", "SERVICE_ACCOUNT"),
    "kind": (),
}
_LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")


class SettingsError(ConfigError):
    """Missing or invalid settings; ``problems`` lists each as ``(key, message)``."""

    def __init__(self, problems: list[tuple[str, str]], target: str, config: Path | None):
        self.problems = problems
        where = f"{config}" if config else f"{DEFAULT_CONFIG} (copy {EXAMPLE})"
        lines = [f"Cannot submit (target {target}): {len(problems)} setting(s) missing or invalid."]
        lines += [f"  - {key}: {message}" for key, message in problems]
        lines.append(f"Set each as KEY=VALUE in {where}, in the environment, or with --set KEY=VALUE;")
        lines.append(f"{EXAMPLE} lists every key, `make infra-config` fills the GCP ones.")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class SubmitSettings:
    """Everything one submission needs. Build it with :func:`load_settings`."""

    target: str
    template: str
    parameters: dict[str, Any] = field(default_factory=dict)  # raw values, typed later
    project: str = ""
    region: str = ""
    pipeline_root: str = ""
    service_account: str = ""
    network: str = ""
    encryption_key: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    enable_caching: bool | None = None
    experiment: str = ""
    display_name: str = ""
    job_id: str = ""
    kfp_host: str = DEFAULT_KFP_HOST
    kfp_namespace: str = ""
    kfp_experiment: str = ""
    kfp_service_account: str = ""
    kfp_pipeline_root: str = ""
    pipeline_name: str = "fer-pipeline"  # from the template
    template_commit: str = ""  # the template's `commit` parameter default, as a label value
    config_path: Path | None = None


def parse_labels(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        pairs = []
        for item in filter(None, (part.strip() for part in str(value).split(","))):
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError(f"expected key=value, got {item!r}")
            pairs.append((key.strip(), val.strip()))
    for key, val in pairs:
        if not _LABEL_RE.match(key) or not _LABEL_VALUE_RE.match(val):
            raise ValueError(
                f"label {key}={val}: keys start with a lowercase letter, keys and values use only "
                "lowercase letters, digits, '-' and '_' (63 characters at most)"
            )
    return dict(pairs)


# Pipeline parameters filled from the settings when the pipeline declares them and
# they are not set explicitly (Vertex only): where model registration runs, and where
# the evaluation logs the run (EXPERIMENT) and training streams its curves (TENSORBOARD).
AUTO_PARAMETERS = {"project": "PROJECT", "location": "REGION", "experiment": "EXPERIMENT", "tensorboard": "TENSORBOARD"}


# ------------------------------------------------------------------ loading
def load_settings(
    target: str = "vertex",
    config: Path | str | None = DEFAULT_CONFIG,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SubmitSettings:
    """Merge config file < environment < overrides into one :class:`SubmitSettings`.

    Checks everything before anything is sent, and raises ONE :class:`SettingsError`
    listing every problem: the target's required keys, the format of labels and flags,
    the compiled template's presence, and each pipeline parameter against the
    template (unknown names, wrong types, required ones without a value). Parameters
    come out typed as the pipeline declares them. A missing default config file is
    fine (everything may come from the environment); one named explicitly must exist.
    """
    if target not in TARGETS:
        raise ConfigError(f"Unknown target {target!r}; expected one of {', '.join(TARGETS)}.")
    merged, config_path = merge_sources(config, os.environ if environ is None else environ, overrides)

    text = functools.partial(_text, merged)

    problems = key_problems(merged)
    problems += [(key, f"missing: {KEYS[key]}") for key in REQUIRED[target] if not text(key)]
    labels, enable_caching, format_problems = _checked_formats(target, merged)
    problems += format_problems

    template_key = "TEMPLATE" if target == "vertex" else "KFP_TEMPLATE"
    template = text(template_key, DEFAULT_TEMPLATES[target])
    # An empty value leaves a parameter unset (the example config lists them empty).
    given = {
        k[len(PARAM_PREFIX) :]: v
        for k, v in merged.items()
        if k.startswith(PARAM_PREFIX) and v is not None and str(v).strip() != ""
    }
    parameters, pipeline_name, template_commit = given, "fer-pipeline", ""
    if target == "kind":
        problems += _compiled_on_kind(given)
    if is_remote(template) and target == "kind":
        problems.append((template_key, f"{template}: KFP runs a local compiled file ({DEFAULT_TEMPLATES['kind']})"))
    elif is_remote(template):
        pass  # an Artifact Registry template is fetched and checked when the run is submitted
    elif not Path(template).is_file():
        problems.append((template_key, f"compiled pipeline {template} not found: run `make compile` first"))
    else:
        documents = load_pipeline_documents(template)
        spec = documents[0]
        pipeline_name = spec.get("pipelineInfo", {}).get("name", pipeline_name)
        template_commit = _commit_label(spec)
        if mismatch := wrong_template(template, documents, "vertex" if target == "vertex" else "kfp"):
            problems.append((template_key, mismatch))
        parameters, parameter_problems = _template_parameters(spec, given, target, merged)
        problems += parameter_problems
    if problems:
        raise SettingsError(problems, target, config_path)

    return SubmitSettings(
        target=target,
        template=template,
        parameters=parameters,
        project=text("PROJECT"),
        region=text("REGION"),
        pipeline_root=text("PIPELINE_ROOT"),
        service_account=text("SERVICE_ACCOUNT"),
        network=text("NETWORK"),
        encryption_key=text("ENCRYPTION_KEY"),
        labels=labels,
        enable_caching=enable_caching,
        experiment=text("EXPERIMENT"),
        display_name=text("DISPLAY_NAME"),
        job_id=text("JOB_ID"),
        kfp_host=text("KFP_HOST", DEFAULT_KFP_HOST),
        kfp_namespace=text("KFP_NAMESPACE"),
        kfp_experiment=text("KFP_EXPERIMENT"),
        kfp_service_account=text("KFP_SERVICE_ACCOUNT"),
        kfp_pipeline_root=text("KFP_PIPELINE_ROOT"),
        pipeline_name=pipeline_name,
        template_commit=template_commit,
        config_path=config_path,
    )


# Set in the GPU steps of the KFP file when it is compiled: as parameters on kind they change nothing.
COMPILED_ON_KIND = ("gpu_count", "gpu_type")


def _compiled_on_kind(given: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The given parameters that the KFP file fixes at compile time, each named with what sets it."""
    return [
        (
            PARAM_PREFIX + name,
            "on kind the KFP file's GPU request is fixed when it is compiled: GPU_COUNT= at `make compile` sets "
            "the count, the node pool (pipelines/resources.py) the type; leave this parameter out",
        )
        for name in COMPILED_ON_KIND
        if name in given
    ]


def key_problems(merged: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Keys no command reads (a misspelt one is named, not ignored), and values a JSON/YAML
    file gave as a list or mapping where text belongs: the checks every settings reader shares."""
    return [(key, "unknown setting") for key in sorted(k for k in merged if not known_key(k))] + _not_text(merged)


def _not_text(merged: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Settings a JSON/YAML file gave as a list or mapping where text belongs (LABELS may be a
    mapping): as text they would be sent as "['a', 'b']"."""
    return [
        (key, f"expected text, got a {'list' if isinstance(value, list) else 'mapping'}")
        for key, value in sorted(merged.items())
        if key in KEYS and key != "LABELS" and isinstance(value, (list, dict))
    ]


def _text(merged: Mapping[str, Any], key: str, default: str = "") -> str:
    """A setting's value as stripped text; ``default`` when it is unset or blank."""
    value = merged.get(key)
    return default if value is None or str(value).strip() == "" else str(value).strip()


def _checked_formats(
    target: str, merged: Mapping[str, Any]
) -> tuple[dict[str, str], bool | None, list[tuple[str, str]]]:
    """The parsed labels and caching flag, and the problems of every setting with a format."""
    text = functools.partial(_text, merged)
    problems: list[tuple[str, str]] = []
    labels: dict[str, str] = {}
    if text("LABELS"):
        try:
            labels = parse_labels(merged["LABELS"])  # a config file may give a mapping
        except ValueError as exc:
            problems.append(("LABELS", str(exc)))
    enable_caching = None
    if text("ENABLE_CACHING"):
        try:
            enable_caching = parse_bool(merged["ENABLE_CACHING"])
        except ValueError as exc:
            problems.append(("ENABLE_CACHING", str(exc)))
    if text("EXPERIMENT") and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,127}", text("EXPERIMENT")):
        problems.append(("EXPERIMENT", "lowercase letters, digits and '-', starting with a letter or digit"))
    if text("TENSORBOARD") and not re.fullmatch(
        r"projects/[^/]+/locations/[^/]+/tensorboards/[^/]+", text("TENSORBOARD")
    ):
        problems.append(("TENSORBOARD", "expected projects/PROJECT/locations/REGION/tensorboards/ID"))
    pipeline_root = text("PIPELINE_ROOT")
    if pipeline_root and target == "vertex" and not pipeline_root.startswith("gs://"):
        problems.append(("PIPELINE_ROOT", f"must be a gs:// URI, got {pipeline_root!r}"))
    return labels, enable_caching, problems


def _commit_label(spec: dict) -> str:
    """The template's ``commit`` parameter default as a label value ("" when unknown)."""
    commit = parameter_specs(spec).get("commit", {}).get("defaultValue")
    if not isinstance(commit, str) or commit in ("", "unknown"):
        return ""
    return re.sub(r"[^a-z0-9_-]", "-", commit.lower())[:63]


def _template_parameters(
    spec: dict, given: dict[str, Any], target: str, merged: Mapping[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``given`` checked and typed against the template's parameters; on Vertex, the parameters
    a setting fills (AUTO_PARAMETERS) added where the template has them and none was given."""
    declared = parameter_specs(spec)
    text = functools.partial(_text, merged)
    if target == "vertex":
        given = given | {
            name: text(key)
            for name, key in AUTO_PARAMETERS.items()
            if name in declared and name not in given and text(key)
        }
    return resolve_parameters(given, declared)


# ------------------------------------------------------------------ make
# What mk/cloud.mk reads from the settings file (`python -m pipelines.settings_cli
# make-vars`): make applies its own precedence over these (command line, environment).
MAKE_KEYS = ("PROJECT", "REGION", "REPO", "REGISTRY")
_MAKE_SAFE = re.compile(r"[A-Za-z0-9._:/@-]+")  # goes into recipes as '$(VALUE)'


def make_values(config: Path | str) -> dict[str, str]:
    """The non-empty :data:`MAKE_KEYS` of the config file, read as :func:`load_settings`
    reads it (nothing when the file is absent). A file that does not parse, an unknown
    key, or a value make cannot hand to a shell raises a one-line ConfigError."""
    path = Path(config)
    if not path.is_file():
        return {}
    values = read_config(path)
    unknown = sorted(key for key in values if not known_key(key))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}: fix the name ({EXAMPLE} lists every key).")
    found = {}
    for key in MAKE_KEYS:
        text = "" if values.get(key) is None else str(values[key]).strip()
        if text and not _MAKE_SAFE.fullmatch(text):
            raise ConfigError(
                f"{path}: {key}={text!r}: use only letters, digits and . _ - : / @ (make passes it to the shell)."
            )
        if text:
            found[key] = text
    return found


# ------------------------------------------------------------------ command-line overrides
def parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    """``["K=V", ...]`` from a repeatable command-line flag, as a dict."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}.")
        pairs[key.strip()] = value
    return pairs


def cli_overrides(set_items: list[str], param_items: list[str]) -> dict[str, str]:
    """Settings from ``--set KEY=VALUE`` and pipeline parameters from ``--param NAME=VALUE``."""
    overrides = parse_pairs(set_items, "--set")
    overrides.update({PARAM_PREFIX + k: v for k, v in parse_pairs(param_items, "--param").items()})
    return overrides


if __name__ == "__main__":  # the older entry point: python -m pipelines.settings_cli is the command line
    from pipelines.settings_cli import main

    sys.exit(main())
