"""The settings file (config/submit.env): its keys, reading it, and writing terraform's
outputs into it. pipelines/settings.py builds the checked settings from what is read here;
make reads the same file through it too (``python -m pipelines.settings_cli make-vars``).

The ``.env`` format (``KEY=VALUE``, ``#`` comments, ``export``, quotes) is read and
written with python-dotenv (pinned in pyproject's ``pipeline`` extra). python-dotenv
rather than pydantic-settings: the format is the only part a library does better than
this module. What comes after reading (config file < environment < ``--set``, the keys
each target requires, every ``PARAM_<name>`` checked against the compiled template,
and ONE error listing every problem) is project logic that pydantic-settings' sources
(bound to ``os.environ``, one model per fixed key set) would not replace, only wrap;
pydantic-settings reads ``.env`` files with python-dotenv itself. No variable
interpolation: a value is what the file says. ``.json``, ``.yaml`` and ``.yml`` files
hold the same keys at the top level and the pipeline parameters under ``parameters:``
(PyYAML, which reads JSON too).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from dotenv import set_key
from dotenv.parser import parse_stream

from fer_pipeline.errors import ConfigError

DEFAULT_CONFIG = Path("config/submit.env")
DEFAULT_KFP_HOST = "http://localhost:8080"  # `make kfp-forward`
PARAM_PREFIX = "PARAM_"
EXAMPLE = "config/submit.example.env"

# Every key, with what it is and where its value usually comes from.
KEYS: dict[str, str] = {
    "PROJECT": "GCP project id (terraform output -raw project_id)",
    "REGION": "Vertex AI region, e.g. europe-west4 (terraform output -raw region)",
    "PIPELINE_ROOT": "gs:// folder for pipeline artifacts (terraform output -raw pipeline_root)",
    "SERVICE_ACCOUNT": "pipeline service account e-mail (terraform output -raw service_account_email)",
    "NETWORK": "optional VPC for peering: projects/PROJECT_NUMBER/global/networks/NAME",
    "ENCRYPTION_KEY": "optional Cloud KMS key for the run (projects/.../cryptoKeys/KEY)",
    "LABELS": "optional run labels: key=value,key=value",
    "ENABLE_CACHING": "optional: false turns caching off; true/unset keeps the compiled settings (ingest, register never)",
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
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def known_key(key: str) -> bool:
    return key in KEYS or key.startswith(PARAM_PREFIX)


# ------------------------------------------------------------------ merging
def merge_sources(
    config: Path | str | None, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], Path | None]:
    """Config file < environment (the settings' keys only) < ``overrides``; also the config
    file that was read (None: none). A missing default config file is fine (everything may
    come from the environment); one named explicitly must exist.

    Raises:
        ConfigError: a named config file that is missing or does not parse.
    """
    path = Path(config) if config else None
    merged: dict[str, Any] = {}
    if path is not None:
        if path.is_file():
            merged.update(read_config(path))
        elif path != DEFAULT_CONFIG:
            raise ConfigError(f"Config file {path} not found (copy {EXAMPLE}).")
        else:
            path = None
    merged.update({key: value for key, value in environ.items() if known_key(key)})
    merged.update(overrides or {})
    return merged, path


def non_empty(merged: Mapping[str, Any]) -> dict[str, str]:
    """The values that say something, as stripped text (an empty value leaves a key unset)."""
    return {key: str(value).strip() for key, value in merged.items() if value is not None and str(value).strip()}


# ------------------------------------------------------------------ reading
def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}).") from None


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines, parsed by python-dotenv: ``#`` comments (also after an unquoted
    value), an ``export`` prefix, single or double quotes (escapes as in a shell's double
    quotes). A line that is not ``KEY=VALUE`` is an error naming the file and line (python-
    dotenv alone would skip it with a logged warning)."""
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for binding in parse_stream(io.StringIO(_text(path))):
        original = binding.original.string
        if binding.key is None and not binding.error:
            continue  # blank lines and comments
        # a binding starts at the blank lines before it: name the line with the text
        number = binding.original.line + original[: len(original) - len(original.lstrip())].count("\n")
        if binding.error or binding.value is None or not _KEY_RE.fullmatch(binding.key or ""):
            raw = original.strip().splitlines()[0] if original.strip() else original
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}.")
        if binding.key in lines:  # the last would win unseen: which one did the user mean?
            raise ConfigError(
                f"{path}:{number}: {binding.key} is set again (first on line {lines[binding.key]}); keep one of them."
            )
        values[binding.key], lines[binding.key] = binding.value, number
    return values


class _KeyGivenTwice(Exception):
    def __init__(self, key: Any, line: int, first: int):
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML and json keep
    the last unseen, as python-dotenv would; read_env_file refuses those too)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` merges on purpose
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in first_lines:
                        raise _KeyGivenTwice(key, line, first_lines[key])
                except TypeError:  # a list or mapping as a key (`? [a, b]`): PyYAML's own error names it
                    continue
                first_lines[key] = line
        return super().construct_mapping(node, deep=deep)


def read_config(path: Path) -> dict[str, Any]:
    """Flat ``KEY -> value`` from a .env, .json or .yaml file (parameters as PARAM_<name>)."""
    if path.suffix in (".json", ".yaml", ".yml"):
        try:
            data = yaml.load(_text(path), Loader=_UniqueKeyLoader) or {}  # safe: a SafeLoader subclass
        except _KeyGivenTwice as exc:
            raise ConfigError(
                f"{path}:{exc.line}: {exc.key} given twice (first on line {exc.first}); keep one of them."
            ) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else f"{path}"
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"{where}: not valid {path.suffix[1:].upper()} ({problem}).") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level.")
        params = data.pop("parameters", None) or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{path}: 'parameters' must be a mapping of name: value.")
        if misplaced := sorted(str(k) for k in data if str(k).upper().startswith(PARAM_PREFIX)):
            raise ConfigError(
                f"{path}: {', '.join(misplaced)} at the top level; pipeline parameters go under 'parameters:' by "
                f"name (parameters: {{{misplaced[0][len(PARAM_PREFIX) :]}: ...}})."
            )
        flat: dict[str, Any] = {str(k).upper(): v for k, v in data.items()}
        if twice := sorted(k for k in flat if sum(str(key).upper() == k for key in data) > 1):
            raise ConfigError(f"{path}: {', '.join(twice)} given twice (keys are read in any case); keep one of them.")
        flat.update({PARAM_PREFIX + str(k): v for k, v in params.items()})
        return flat
    return read_env_file(path)


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
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9._:/@+=,-]*")  # written unquoted: reads back the same


def update_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Set ``values`` in a KEY=VALUE file (python-dotenv's ``set_key``: the other lines
    and comments stay, each write replaces the file whole). Plain values are written
    unquoted, others in single quotes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for key, value in values.items():
        set_key(path, key, value, quote_mode="never" if _PLAIN_VALUE.fullmatch(value) else "always")


def terraform_values(outputs: Mapping[str, Any]) -> dict[str, str]:
    """Map ``terraform output -json`` to settings keys (empty outputs are left out)."""
    values = {}
    for name, key in TERRAFORM_OUTPUTS.items():
        value = outputs.get(name, {})
        value = value.get("value") if isinstance(value, dict) else value
        if value not in (None, ""):
            values[key] = str(value)
    return values
