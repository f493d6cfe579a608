"""A local model registry in a directory; the champion gate it applies is ``fer_pipeline.champion``.

Layout::

    <root>/index.json             every model, version, alias and metric (the only index)
    <root>/<name>/<version>/      a copy of the registered model folder (versions 1, 2, 3...)

A new version becomes ``champion`` (and the default version) only when it beats the
current champion on the primary metric; otherwise it becomes ``challenger``. Aliases
move: each points at one version of a model at a time. References are ``NAME`` (the
default version), ``NAME@champion``, ``NAME@challenger``, ``NAME@<alias>`` or
``NAME@<version>``.

``index.json`` is rewritten atomically (``files.write_json``: temp file + ``os.replace``)
under a lock (``files.locked``), and model folders are copied under a temp name and
renamed into place, so a crash never leaves a half-registered version visible.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

# The gate's names stay importable from here too (fer_pipeline.cloud.vertex_registry, the tests).
from fer_pipeline.champion import CHALLENGER, CHAMPION, DEFAULT_PRIMARY_METRIC, champion_gate, metric_value
from fer_pipeline.errors import ConfigError, FerError, UnusableFileError, check_shape, read_json_file
from fer_pipeline.files import locked, nearest_existing, write_json, write_refusal

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
INDEX_FORMAT_VERSION = 1
REGISTRY_ENV = "FER_REGISTRY"
DEFAULT_REGISTRY_DIR = Path("build") / "registry"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def default_registry_root() -> Path:
    """The registry folder when none is given: ``$FER_REGISTRY``, else ``build/registry``."""
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY_DIR)


class RegistryError(FerError):
    """A registry reference or registration cannot be resolved or carried out."""


class RegistryFileError(RegistryError, UnusableFileError):
    """The registry's index.json is not valid JSON, of another format, or the wrong shape."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered version, as resolved from the index."""

    name: str
    version: int
    path: Path
    metrics: dict[str, Any]
    labels: dict[str, str]
    description: str
    primary_metric: str
    aliases: tuple[str, ...] = ()
    is_default: bool = False
    created: str = ""

    @property
    def ref(self) -> str:
        """The exact reference, ``NAME@<version>``."""
        return f"{self.name}@{self.version}"

    @property
    def files_missing(self) -> bool:
        """Whether the version's folder is gone (removed by hand) while the index still holds it."""
        return not self.path.is_dir()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (path as a string)."""
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "path": str(self.path),
            "aliases": list(self.aliases),
            "is_default": self.is_default,
            "primary_metric": self.primary_metric,
            "metrics": self.metrics,
            "labels": self.labels,
            "description": self.description,
            "created": self.created,
        }


def missing_files_message(version: ModelVersion) -> str:
    """The words that say ``version``'s folder is gone (``models`` warns with them, loading refuses)."""
    return (
        f"registry version {version.ref}'s files are missing under {version.path}; restore that folder "
        "from a backup, or register the model again"
    )


def resolve_registered(ref: str, root: Path | None, tried: str) -> ModelVersion:
    """``ref`` in the local registry at ``root`` (None: ``default_registry_root()``), its files
    there: what predict and serve load.

    Raises:
        RegistryFileError: the registry is damaged, or the version's folder is gone (exit 1).
        FerError: a path that does not exist, or no such model, alias or version; ``tried``
            says what else ``ref`` is not (exit 2).
    """
    if "/" in ref or ref.endswith(".keras"):  # registry names have no "/": this was meant as a path
        raise FerError(
            f"{ref} does not exist; pass a model folder, a .keras file or a registry reference (NAME@champion)."
        )
    registry = LocalRegistry(root if root is not None else default_registry_root())
    try:
        version = registry.resolve(ref)
    except RegistryFileError:  # the registry is damaged: its own line says how, not "not found"
        raise
    except RegistryError as exc:
        raise FerError(f"Model {ref!r} is {tried} and not in the registry at {registry.root}: {exc}") from None
    if version.files_missing:
        raise RegistryFileError(f"The {missing_files_message(version)}.")
    return version


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``NAME[@ALIAS_OR_VERSION]`` into its parts (the second is None without ``@``)."""
    name, sep, selector = ref.partition("@")
    if not name or (sep and not selector):
        raise RegistryError(
            f"Model reference {ref!r} is malformed; use NAME, NAME@champion, NAME@challenger or NAME@<version>."
        )
    return name, (selector if sep else None)


@dataclass
class LocalRegistry:
    """A model registry living in one directory (see the module docstring for the layout)."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # ---- reading -----------------------------------------------------------------

    def list(self, name: str | None = None) -> list[ModelVersion]:
        """All versions, ordered by model name then version; only ``name``'s when given.

        Raises:
            RegistryError: ``name`` is not registered.
        """
        index = self._read_index()
        if name is not None:
            self._model_entry(index, name)  # raises, listing what exists
            names = [name]
        else:
            names = sorted(index["models"])
        return [
            self._to_version(model, entry, index["models"][model])
            for model in names
            for entry in index["models"][model]["versions"]
        ]

    def resolve(self, ref: str) -> ModelVersion:
        """Resolve ``NAME``, ``NAME@<alias>`` or ``NAME@<version>`` to a registered version.

        Raises:
            RegistryError: unknown name, alias or version; the message lists what exists.
        """
        name, selector = parse_ref(ref)
        index = self._read_index()
        model = self._model_entry(index, name)
        if selector is None:
            version, pointer = model["default_version"], "default version"
        elif selector.isdigit():
            version, pointer = int(selector), None
        elif selector in model["aliases"]:
            version, pointer = model["aliases"][selector], f"alias {selector!r}"
        else:
            known = ", ".join(f"{a} (v{v})" for a, v in sorted(model["aliases"].items())) or "none"
            raise RegistryError(f"Model {name!r} has no alias {selector!r}; its aliases: {known}.")
        for entry in model["versions"]:
            if entry["version"] == version:
                return self._to_version(name, entry, model)
        versions = ", ".join(str(e["version"]) for e in model["versions"]) or "none"
        if pointer is None:  # the caller asked for a version that is not there
            raise RegistryError(f"Model {name!r} has no version {version}; its versions: {versions}.")
        if version is None:  # a model entry without versions (a registration never wrote one)
            raise RegistryFileError(
                f"{self.root / INDEX_FILE} is damaged: model {name!r} has no default version (its versions: "
                f"{versions}); restore the file from a backup or ask for NAME@<version>."
            )
        raise RegistryFileError(
            f"{self.root / INDEX_FILE} is damaged: the {pointer} of model {name!r} points at version {version}, "
            f"which the index does not hold (its versions: {versions}); restore the file from a backup or "
            "point the alias at a version it holds."
        )

    def dangling(self, name: str | None = None) -> list[tuple[str, str, int | None]]:
        """The aliases (and default versions, as ``"default"``) that point at a version the
        index does not hold, as ``(model, alias, version)``: a damaged index, which
        ``resolve`` refuses; ``models list`` shows them."""
        index = self._read_index()
        names = [name] if name is not None else sorted(index["models"])
        found = []
        for model_name in names:
            model = self._model_entry(index, model_name)
            held = {e["version"] for e in model["versions"]}
            pointers = [*sorted(model["aliases"].items()), ("default", model["default_version"])]
            found += [(model_name, a, v) for a, v in pointers if v not in held and (v is not None or held)]
        return found

    def champion(self, name: str) -> ModelVersion | None:
        """The version holding the ``champion`` alias, or None (also for an unknown name)."""
        model = self._read_index()["models"].get(name)
        if not model or CHAMPION not in model["aliases"]:
            return None
        return self.resolve(f"{name}@{CHAMPION}")

    # ---- writing -----------------------------------------------------------------

    def register(
        self,
        name: str,
        model_dir: Path,
        metrics: Mapping[str, Any],
        *,
        labels: Mapping[str, str],
        description: str,
        primary_metric: str = DEFAULT_PRIMARY_METRIC,
    ) -> ModelVersion:
        """Copy a model folder in as the next version and move the champion or challenger alias.

        Args:
            name: the model family, e.g. ``fer-densenet169``.
            model_dir: the folder to copy (e.g. training output holding ``model.keras``),
                or a single model file, copied into the version folder.
            metrics: the evaluation metrics; must hold ``primary_metric``.
            labels: free-form string labels (dataset checksum, commit, ...).
            description: one line for humans.
            primary_metric: the metric the champion gate compares; higher is better.

        Returns:
            The new version, with its aliases after the gate.

        Raises:
            RegistryError: bad name or missing ``model_dir``.
            ConfigError: ``primary_metric`` missing from the metrics.
        """
        check_model_name(name)
        model_dir = Path(model_dir)
        if not model_dir.exists():
            raise RegistryError(f"Cannot register {name!r}: {model_dir} does not exist; pass the trained model folder.")
        metric_value(metrics, primary_metric, "new model")  # fail before copying anything
        check_registry_folder(self.root)

        with locked(self.root / ".lock"):
            index = self._read_index()
            model = index["models"].setdefault(name, {"versions": [], "aliases": {}, "default_version": None})
            champion_entry = self._entry_for_alias(model, CHAMPION)
            if champion_entry is None and CHAMPION in model["aliases"]:
                log.warning(
                    "%s: %r's champion alias points at version %s, which it does not hold; the new version "
                    "takes the alias without a comparison.",
                    self.root / INDEX_FILE,
                    name,
                    model["aliases"][CHAMPION],
                )
            wins = champion_gate(metrics, champion_entry["metrics"] if champion_entry else None, primary_metric)
            version = max((e["version"] for e in model["versions"]), default=0) + 1

            self._copy_model(model_dir, self.root / name / str(version))
            model["versions"].append(
                {
                    "version": version,
                    "path": f"{name}/{version}",
                    "metrics": json_ready(dict(metrics)),
                    "labels": {str(k): str(v) for k, v in labels.items()},
                    "description": description,
                    "primary_metric": primary_metric,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
            )
            model["aliases"][CHAMPION if wins else CHALLENGER] = version
            if wins or model["default_version"] is None:
                model["default_version"] = version
            self._write_index(index)

        registered = self.resolve(f"{name}@{version}")
        log.info(
            "Registered %s as %s (%s=%s, champion before: %s)",
            registered.ref,
            CHAMPION if wins else CHALLENGER,
            primary_metric,
            metrics[primary_metric],
            f"v{champion_entry['version']}={champion_entry['metrics'].get(primary_metric)}"
            if champion_entry
            else "none",
        )
        return registered

    def set_alias(self, ref: str, alias: str) -> ModelVersion:
        """Point ``alias`` at the version ``ref`` resolves to (moving it from any other).

        Promoting with ``champion`` also makes the version the default.
        """
        if not _ALIAS_PATTERN.match(alias):
            raise RegistryError(f"Alias {alias!r} is invalid; use lowercase letters, digits, '-' or '_'.")
        if alias.isdigit():
            raise RegistryError(f"Alias {alias!r} would read as a version number; pick a name.")
        with locked(self.root / ".lock"):
            target = self.resolve(ref)
            index = self._read_index()
            model = index["models"][target.name]
            model["aliases"][alias] = target.version
            if alias == CHAMPION:
                model["default_version"] = target.version
            self._write_index(index)
        return self.resolve(target.ref)

    # ---- internals ---------------------------------------------------------------

    def _read_index(self) -> dict[str, Any]:
        path = self.root / INDEX_FILE
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(_not_a_folder(self.root))
        if not path.exists():
            return {"format_version": INDEX_FORMAT_VERSION, "models": {}}
        try:
            index = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryFileError(
                f"{path} is not valid JSON ({exc}); restore it from a backup or start a new registry."
            ) from exc
        except OSError as exc:  # a folder named index.json, no permission
            raise RegistryFileError(
                f"{path} cannot be read as the registry index ({exc.strerror or exc}); "
                "restore it from a backup or start a new registry."
            ) from None
        if isinstance(index, dict) and index.get("format_version") != INDEX_FORMAT_VERSION:
            raise RegistryFileError(
                f"{path} has format_version {index.get('format_version')!r}; this version reads {INDEX_FORMAT_VERSION}."
            )
        check_shape(_IndexShape, index, path, "a model registry index", RegistryFileError)
        return index

    def _write_index(self, index: dict[str, Any]) -> None:
        write_json(self.root / INDEX_FILE, index, sort_keys=True)

    def _model_entry(self, index: dict[str, Any], name: str) -> dict[str, Any]:
        try:
            return index["models"][name]
        except KeyError:
            known = ", ".join(sorted(index["models"])) or "none yet"
            raise RegistryError(
                f"No model named {name!r} in the registry at {self.root}; registered: {known}."
            ) from None

    @staticmethod
    def _entry_for_alias(model: dict[str, Any], alias: str) -> dict[str, Any] | None:
        version = model["aliases"].get(alias)
        return next((e for e in model["versions"] if e["version"] == version), None)

    def _to_version(self, name: str, entry: dict[str, Any], model: dict[str, Any]) -> ModelVersion:
        version = entry["version"]
        return ModelVersion(
            name=name,
            version=version,
            path=self.root / entry["path"],
            metrics=entry["metrics"],
            labels=entry["labels"],
            description=entry["description"],
            primary_metric=entry["primary_metric"],
            aliases=tuple(sorted(a for a, v in model["aliases"].items() if v == version)),
            is_default=model["default_version"] == version,
            created=entry.get("created", ""),
        )

    @staticmethod
    def _copy_model(source: Path, target: Path) -> None:
        if target.exists():
            # Left by a registration that crashed after copying; the index never named it.
            log.warning("Replacing unindexed leftover %s", target)
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            if source.is_dir():
                shutil.copytree(source, staging, dirs_exist_ok=True)
            else:
                shutil.copy2(source, staging / source.name)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# The shape index.json must have; checked on every read, so that a file that is valid JSON
# but not an index (``[]``, entries without fields) is refused with its name, not a crash.
class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _VersionShape(_Shape):
    version: int
    path: str
    metrics: dict[str, Any]
    labels: dict[str, str]
    description: str
    primary_metric: str


class _ModelShape(_Shape):
    versions: list[_VersionShape]
    aliases: dict[str, int]
    default_version: int | None


class _IndexShape(_Shape):
    format_version: int
    models: dict[str, _ModelShape]


def _not_a_folder(root: Path, option: str | None = None) -> str:
    kind = "a file" if root.is_file() else "not a folder"
    named = f"{option} {root}" if option else f"Registry {root}"
    return f"{named} is {kind}; the registry is a folder (holding {INDEX_FILE}, made if absent): pass a folder."


def check_registry_folder(root: str | Path, option: str | None = None) -> None:
    """A registry folder a registration can write: an existing folder this process can write
    into, or an absent one whose nearest existing ancestor is such a folder. Checked before
    any work; ``option`` (``--registry``) is named in the message when given.

    Raises:
        RegistryError: a file, a gs:// URI, an empty path, or a place this user cannot write.
    """
    value = str(root)
    named = f"{option} {value!r}" if option else f"Registry {value!r}"
    if not value.strip():
        raise RegistryError(f"{named} is empty; pass the registry folder (it is made if absent).")
    if value.startswith("gs://"):
        raise RegistryError(f"{named}: a gs:// local registry is not supported yet; pass a local folder.")
    root = Path(value)  # as the registration will use it
    if root.exists() and not root.is_dir():
        raise RegistryError(_not_a_folder(root, option))
    folder = nearest_existing(root.absolute())
    if not folder.is_dir():
        raise RegistryError(f"{named}: {folder} is a file, so no registry folder can be made below it.")
    if write_refusal(folder):
        raise RegistryError(f"{named}: {folder} is not writable by this user; pass a folder you can write to.")
    index = root / INDEX_FILE
    if index.exists() and not (index.is_file() and os.access(index, os.R_OK | os.W_OK)):
        raise RegistryError(f"{named}: {index} is not a file this user can read and write; fix its permissions.")


def parse_labels(items: Sequence[str], option: str = "--label") -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict; ConfigError naming the value that is not one, or a
    key given twice (the second would silently replace the first)."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r} is not KEY=VALUE; pass e.g. {option} commit=abc123.")
        if key in labels:
            raise ConfigError(f"{option} {key} is given twice ({labels[key]!r} and {value!r}); pass it once.")
        labels[key] = value
    return labels


def read_metrics_file(path: str | Path, primary_metric: str = DEFAULT_PRIMARY_METRIC) -> dict[str, Any]:
    """The evaluation metrics a registration stores, checked before any work: a JSON object
    holding ``primary_metric`` (what the champion gate compares) as a number, and
    ``accuracy`` and ``macro_f1`` (the version's description) as numbers where present.

    Raises:
        UnusableFileError: naming the file and what it lacks (missing, not JSON, wrong shape).
    """
    what = "the metrics.json that `evaluate` writes"
    metrics = read_json_file(path, what)
    if not isinstance(metrics, dict):
        raise UnusableFileError(f"{path} is not {what} (not a JSON object).")
    if primary_metric not in metrics:
        scalars = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise UnusableFileError(
            f"{path} has no {primary_metric!r}, the metric the champion gate compares "
            f"(numbers in it: {', '.join(scalars[:8]) or 'none'}); pass {what}."
        )
    for key in dict.fromkeys((primary_metric, "accuracy", "macro_f1")):
        value = metrics.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UnusableFileError(f"{path}: {key!r} is {value!r}, not a number; pass {what}.")
        if not 0 <= value <= 1:  # NaN too: a NaN or 1.5 would win (or never lose) the champion gate
            raise UnusableFileError(f"{path}: {key!r} is {value!r}, not a score from 0 to 1; pass {what}.")
    return metrics


def check_model_name(name: str, option: str | None = None) -> None:
    """Model names become folder names and precede ``@`` in references (and the server's
    URLs); ``option`` (``--name``) is named in the message when given."""
    if not _NAME_PATTERN.match(name or ""):
        raise RegistryError(
            f"{f'{option}: ' if option else ''}Model name {name!r} is invalid; use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 128 characters)."
        )


def json_ready(value: Any) -> Any:
    """Convert numpy scalars/arrays (as metrics often hold) to plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    return value
