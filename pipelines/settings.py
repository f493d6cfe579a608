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

The config file is ``.env`` style (``KEY=VALUE``, ``#`` comments, optional quotes), or
JSON/YAML (``.json``, ``.yaml``, ``.yml``) with the same keys at the top level and the
pipeline parameters under ``parameters:``. Missing or invalid settings are reported in
ONE error that lists each of them and where to set it.

    python -m pipelines.settings from-terraform [--config config/submit.env]

writes the terraform outputs of infra/gcp into the config file (keeping its other keys).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from fer_pipeline.errors import ConfigError

TARGETS = ("vertex", "kind")
DEFAULT_CONFIG = Path("config/submit.env")
DEFAULT_TEMPLATES = {"vertex": "build/pipeline.yaml", "kind": "build/pipeline-kfp.yaml"}
DEFAULT_KFP_HOST = "http://localhost:8080"  # `make kfp-forward`
PARAM_PREFIX = "PARAM_"

# Every key, with what it is and where its value usually comes from.
KEYS: dict[str, str] = {
    "PROJECT": "GCP project id (terraform output -raw project_id)",
    "REGION": "Vertex AI region, e.g. europe-west4 (terraform output -raw region)",
    "PIPELINE_ROOT": "gs:// folder for pipeline artifacts (terraform output -raw pipeline_root)",
    "SERVICE_ACCOUNT": "pipeline service account e-mail (terraform output -raw service_account_email)",
    "NETWORK": "optional VPC for peering: projects/PROJECT_NUMBER/global/networks/NAME",
    "ENCRYPTION_KEY": "optional Cloud KMS key for the run (projects/.../cryptoKeys/KEY)",
    "LABELS": "optional run labels: key=value,key=value",
    "ENABLE_CACHING": "optional true/false: override the compiled caching settings",
    "EXPERIMENT": "optional Vertex AI experiment: each run's parameters and metrics are logged to it",
    "TENSORBOARD": "optional Vertex AI TensorBoard for the training curves: projects/P/locations/L/tensorboards/ID "
    "(terraform output -raw tensorboard)",
    "DISPLAY_NAME": "optional run display name (default: the pipeline name)",
    "JOB_ID": "optional run id (default: pipeline name + timestamp)",
    "TEMPLATE": "compiled Vertex pipeline: a path or Artifact Registry URL (default build/pipeline.yaml)",
    "TEMPLATE_REPOSITORY": "Artifact Registry KFP repository for make publish: https://REGION-kfp.pkg.dev/PROJECT/REPO "
    "(terraform output -raw kfp_repository_url)",
    "TEMPLATE_TAGS": "optional tags for make publish: tag,tag (default: the compiled commit, latest)",
    "KFP_HOST": f"KFP API endpoint (default {DEFAULT_KFP_HOST}, see make kfp-forward)",
    "KFP_NAMESPACE": "optional Kubernetes namespace (multi-user KFP only)",
    "KFP_EXPERIMENT": "optional KFP experiment name (default: Default)",
    "KFP_SERVICE_ACCOUNT": "optional Kubernetes service account for the run's pods",
    "KFP_PIPELINE_ROOT": "optional artifact root on KFP (default: the deployment's, MinIO)",
    "KFP_TEMPLATE": "compiled KFP pipeline (default build/pipeline-kfp.yaml)",
    # read by make only (mk/cloud.mk): where `make build/push/compile` name the images
    "REGISTRY": "image registry path, e.g. REGION-docker.pkg.dev/PROJECT/REPO (terraform output -raw docker_registry)",
    "REPO": "Artifact Registry docker repository id (default fer-pipeline)",
}
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
        where = f"{config}" if config else f"{DEFAULT_CONFIG} (copy config/submit.example.env)"
        lines = [f"Cannot submit (target {target}): {len(problems)} setting(s) missing or invalid."]
        lines += [f"  - {key}: {message}" for key, message in problems]
        lines.append(f"Set each as KEY=VALUE in {where}, in the environment, or with --set KEY=VALUE;")
        lines.append("config/submit.example.env lists every key, `make infra-config` fills the GCP ones.")
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


# ------------------------------------------------------------------ config files
def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; ``#`` comments; ``export`` prefix and surrounding quotes allowed."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}.")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.sub(r"\s+#.*$", "", value)  # trailing comment on an unquoted value
        values[key] = value
    return values


def read_config(path: Path) -> dict[str, Any]:
    """Flat ``KEY -> value`` from a .env, .json or .yaml file (parameters as PARAM_<name>)."""
    if path.suffix in (".json", ".yaml", ".yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level.")
        params = data.pop("parameters", None) or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{path}: 'parameters' must be a mapping of name: value.")
        flat: dict[str, Any] = {str(k).upper(): v for k, v in data.items()}
        flat.update({PARAM_PREFIX + str(k): v for k, v in params.items()})
        return flat
    return read_env_file(path)


def _known(key: str) -> bool:
    return key in KEYS or key.startswith(PARAM_PREFIX)


# ------------------------------------------------------------------ parsing helpers
def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {value!r}")


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


# ------------------------------------------------------------------ the compiled pipeline
# Pipeline parameters filled from the settings when the pipeline declares them and
# they are not set explicitly (Vertex only): where model registration runs, and where
# the evaluation logs the run (EXPERIMENT) and training streams its curves (TENSORBOARD).
AUTO_PARAMETERS = {"project": "PROJECT", "location": "REGION", "experiment": "EXPERIMENT", "tensorboard": "TENSORBOARD"}


def is_remote(template: str) -> bool:
    return template.startswith(("https://", "gs://"))


def load_pipeline_spec(template: str | Path) -> dict[str, Any]:
    """The first YAML document of a compiled pipeline (the PipelineSpec)."""
    path = Path(template)
    with path.open(encoding="utf-8") as handle:
        documents = [doc for doc in yaml.safe_load_all(handle) if doc]
    if not documents or "root" not in documents[0]:
        raise ConfigError(f"{path} is not a compiled KFP pipeline (no 'root').")
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
    for name, value in sorted(given.items()):
        if name not in declared:
            problems.append((PARAM_PREFIX + name, f"the pipeline has no parameter {name!r} "
                             f"(it has: {', '.join(sorted(declared))})"))
            continue
        ptype = declared[name].get("parameterType", "STRING")
        try:
            values[name] = coerce(value, ptype)
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
    from fer_pipeline.config import CONFIG_BUILDERS

    effective = {name: spec["defaultValue"] for name, spec in declared.items() if "defaultValue" in spec} | dict(values)
    problems = []
    for build in CONFIG_BUILDERS:
        try:
            build(effective)
        except ConfigError as exc:
            # the parameter the message names: one the user gave first, the longest name first
            named = sorted((name for name in effective if name in str(exc)), key=lambda n: (n not in values, -len(n)))
            problems.append((PARAM_PREFIX + named[0] if named else "parameters", str(exc)))
    return problems


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
    environ = os.environ if environ is None else environ
    config_path = Path(config) if config else None
    merged: dict[str, Any] = {}
    if config_path is not None:
        if config_path.is_file():
            merged.update(read_config(config_path))
        elif config_path != DEFAULT_CONFIG:
            raise ConfigError(f"Config file {config_path} not found (copy config/submit.example.env).")
        else:
            config_path = None
    merged.update({k: v for k, v in environ.items() if _known(k)})
    merged.update(overrides or {})

    problems: list[tuple[str, str]] = []
    unknown = sorted(k for k in merged if not _known(k))
    problems += [(k, "unknown setting") for k in unknown]

    def text(key: str, default: str = "") -> str:
        value = merged.get(key)
        return default if value is None or str(value).strip() == "" else str(value).strip()

    for key in REQUIRED[target]:
        if not text(key):
            problems.append((key, f"missing: {KEYS[key]}"))

    labels: dict[str, str] = {}
    if text("LABELS"):
        try:
            labels = parse_labels(merged["LABELS"])
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
    if text("TENSORBOARD") and not re.fullmatch(r"projects/[^/]+/locations/[^/]+/tensorboards/[^/]+", text("TENSORBOARD")):
        problems.append(("TENSORBOARD", "expected projects/PROJECT/locations/REGION/tensorboards/ID"))
    pipeline_root = text("PIPELINE_ROOT")
    if pipeline_root and target == "vertex" and not pipeline_root.startswith("gs://"):
        problems.append(("PIPELINE_ROOT", f"must be a gs:// URI, got {pipeline_root!r}"))

    template_key = "TEMPLATE" if target == "vertex" else "KFP_TEMPLATE"
    template = text(template_key, DEFAULT_TEMPLATES[target])
    # An empty value leaves a parameter unset (the example config lists them empty).
    given = {
        k[len(PARAM_PREFIX):]: v
        for k, v in merged.items()
        if k.startswith(PARAM_PREFIX) and v is not None and str(v).strip() != ""
    }
    parameters: dict[str, Any] = given
    pipeline_name, template_commit = "fer-pipeline", ""
    if is_remote(template):
        pass  # an Artifact Registry template is checked by Vertex AI itself
    elif not Path(template).is_file():
        problems.append((template_key, f"compiled pipeline {template} not found: run `make compile` first"))
    else:
        spec = load_pipeline_spec(template)
        declared = parameter_specs(spec)
        pipeline_name = spec.get("pipelineInfo", {}).get("name", pipeline_name)
        commit = declared.get("commit", {}).get("defaultValue")
        if isinstance(commit, str) and commit not in ("", "unknown"):
            template_commit = re.sub(r"[^a-z0-9_-]", "-", commit.lower())[:63]
        if target == "vertex":
            for name, key in AUTO_PARAMETERS.items():
                if name in declared and name not in given and text(key):
                    given[name] = text(key)
        parameters, parameter_problems = resolve_parameters(given, declared)
        problems += parameter_problems
    if problems:
        raise SettingsError(problems, target, config_path)

    return SubmitSettings(
        target=target,
        template=template,
        parameters=parameters,
        project=text("PROJECT"),
        region=text("REGION"),
        pipeline_root=pipeline_root,
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


# ------------------------------------------------------------------ terraform outputs
# terraform output name -> settings key (infra/gcp/outputs.tf)
TERRAFORM_OUTPUTS = {
    "project_id": "PROJECT",
    "region": "REGION",
    "pipeline_root": "PIPELINE_ROOT",
    "service_account_email": "SERVICE_ACCOUNT",
    "docker_registry": "REGISTRY",
    "kfp_repository_url": "TEMPLATE_REPOSITORY",
    "tensorboard": "TENSORBOARD",
    "network": "NETWORK",
    "kms_key": "ENCRYPTION_KEY",
}


def update_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Set ``values`` in a KEY=VALUE file, keeping other lines and comments in place."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    pending = dict(values)
    out = []
    for line in lines:
        key = line.strip().removeprefix("export ").partition("=")[0].strip()
        if key in pending and "=" in line and not line.lstrip().startswith("#"):
            out.append(f"{key}={pending.pop(key)}")
        else:
            out.append(line)
    out += [f"{key}={value}" for key, value in pending.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def terraform_values(outputs: Mapping[str, Any]) -> dict[str, str]:
    """Map ``terraform output -json`` to settings keys (empty outputs are left out)."""
    values = {}
    for name, key in TERRAFORM_OUTPUTS.items():
        value = outputs.get(name, {})
        value = value.get("value") if isinstance(value, dict) else value
        if value not in (None, ""):
            values[key] = str(value)
    return values


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.settings", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tf = sub.add_parser("from-terraform", help="write terraform outputs into the config file")
    tf.add_argument("--tf", default="terraform")
    tf.add_argument("--tf-dir", default="infra/gcp")
    tf.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    show = sub.add_parser("show", help="print the merged settings as JSON")
    show.add_argument("--target", default="vertex", choices=TARGETS)
    show.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    try:
        if args.command == "from-terraform":
            result = subprocess.run(
                [args.tf, f"-chdir={args.tf_dir}", "output", "-json"], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise ConfigError(f"terraform output failed:\n{result.stderr.strip()}")
            values = terraform_values(json.loads(result.stdout or "{}"))
            if not values:
                raise ConfigError(f"no outputs in {args.tf_dir}: run `make infra-plan infra-apply` first.")
            update_env_file(args.config, values)
            for key, value in values.items():
                print(f"{args.config}: {key}={value}")
        else:
            settings = load_settings(args.target, args.config)
            print(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()}, indent=2))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())


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
