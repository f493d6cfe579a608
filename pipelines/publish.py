"""Publish the compiled pipeline as a template in an Artifact Registry KFP repository.

    python -m pipelines.publish [--config config/submit.env] [--set KEY=VALUE ...]
                                [--tag TAG ...] [--dry-run]

``make publish`` runs it (``DRY_RUN=1`` prints the request and sends nothing). It
uploads build/pipeline.yaml (or a local TEMPLATE) with ``kfp.registry.RegistryClient``
to TEMPLATE_REPOSITORY (``terraform output -raw kfp_repository_url``:
``https://REGION-kfp.pkg.dev/PROJECT/REPO``; Terraform creates the repository), tagged
with the compiled commit and ``latest`` (TEMPLATE_TAGS or ``--tag`` replace them). It
prints the template URLs: ``TEMPLATE=<url>`` makes ``make submit`` and ``make schedule``
run the published template instead of the local file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_pipeline.cli_parser import OneLineParser
from fer_pipeline.errors import ConfigError
from pipelines.settings import (
    DEFAULT_CONFIG,
    DEFAULT_TEMPLATES,
    SettingsError,
    is_remote,
    key_problems,
    parameter_specs,
    parse_pairs,
)
from pipelines.settings_file import merge_sources, non_empty
from pipelines.template_params import load_pipeline_documents, wrong_template

REPOSITORY_RE = re.compile(r"^https://[a-z0-9-]+-kfp\.pkg\.dev/[^/]+/[^/]+$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DRY_RUN_TOKEN = "dry-run"  # a placeholder bearer token: a dry run never authenticates


@dataclass(frozen=True)
class PublishSettings:
    repository: str
    template: Path
    pipeline_name: str
    tags: list[str] = field(default_factory=list)
    description: str = ""


def load_publish_settings(
    config: Path | str | None = DEFAULT_CONFIG,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    tags: list[str] | None = None,
) -> PublishSettings:
    """Check everything and report every problem at once (a ``SettingsError``)."""
    merged = merge_sources(config, os.environ if environ is None else environ, overrides)[0]
    values = non_empty(merged)
    # the same keys as submit (one settings file serves both): a misspelt one is named, not ignored
    problems = key_problems(merged)
    repository = values.get("TEMPLATE_REPOSITORY", "").rstrip("/")
    if not repository:
        problems.append(
            (
                "TEMPLATE_REPOSITORY",
                "missing: Artifact Registry KFP repository, "
                "https://REGION-kfp.pkg.dev/PROJECT/REPO (terraform output -raw kfp_repository_url)",
            )
        )
    elif not REPOSITORY_RE.match(repository):
        problems.append(
            ("TEMPLATE_REPOSITORY", f"expected https://REGION-kfp.pkg.dev/PROJECT/REPO, got {repository!r}")
        )
    template_value = values.get("TEMPLATE", DEFAULT_TEMPLATES["vertex"])
    template = Path(DEFAULT_TEMPLATES["vertex"] if is_remote(template_value) else template_value)
    name, commit = "fer-pipeline", ""
    if not template.is_file():
        problems.append(("TEMPLATE", f"compiled pipeline {template} not found: run `make compile` first"))
    else:
        documents = load_pipeline_documents(template)
        if mismatch := wrong_template(template, documents, "vertex"):  # templates run on Vertex AI
            problems.append(("TEMPLATE", mismatch))
        spec = documents[0]
        name = spec.get("pipelineInfo", {}).get("name", name)
        default = parameter_specs(spec).get("commit", {}).get("defaultValue")
        commit = default if isinstance(default, str) and default not in ("", "unknown") else ""
    if tags is None and values.get("TEMPLATE_TAGS"):
        tags = [t.strip() for t in values["TEMPLATE_TAGS"].split(",") if t.strip()]
    if tags is None:
        tags = [t for t in (commit, "latest") if t]
    for tag in tags:
        if not TAG_RE.match(tag) or tag.startswith("sha256:"):
            problems.append(("TEMPLATE_TAGS", f"tag {tag!r}: letters, digits, '.', '_' and '-' (not sha256:...)"))
    if problems:
        raise SettingsError(problems, "publish", Path(config) if config and Path(config).is_file() else None)
    description = f"{name} compiled from commit {commit}" if commit else name
    return PublishSettings(repository, template, name, list(dict.fromkeys(tags)), description)


def registry_client(settings: PublishSettings, auth=None):
    """``kfp.registry.RegistryClient`` for the repository (``auth`` None: application default credentials)."""
    from kfp.registry import RegistryClient

    return RegistryClient(host=settings.repository, auth=auth)


def publish_request(settings: PublishSettings, client) -> dict[str, Any]:
    """What ``upload_pipeline`` sends: a multipart POST of the file with the tags as a form field."""
    return {
        "method": "POST",
        "url": client._config["upload_url"],
        "file": str(settings.template),
        "package_name": settings.pipeline_name,
        "form": {"tags": ",".join(settings.tags)},
        "extra_headers": {"description": settings.description},
        "template_urls": [f"{settings.repository}/{settings.pipeline_name}/{tag}" for tag in settings.tags],
    }


def publish(settings: PublishSettings, *, dry_run: bool = False, auth=None, out=None) -> dict:
    """Print the request (dry run) or upload the template and print its URLs."""
    out = out or sys.stdout
    if dry_run and auth is None:
        from kfp.registry.registry_client import ApiAuth

        auth = ApiAuth(DRY_RUN_TOKEN)  # no google.auth.default(): a dry run needs no login
    client = registry_client(settings, auth=auth)
    request = publish_request(settings, client)
    if dry_run:
        print(json.dumps(request, indent=2, sort_keys=True), file=out)
        return request
    package, version = client.upload_pipeline(
        file_name=str(settings.template), tags=settings.tags, extra_headers=request["extra_headers"]
    )
    request["published"] = {"package": package, "version": version, "url": f"{settings.repository}/{package}/{version}"}
    print(f"published {package} {version} (tags: {', '.join(settings.tags)})", file=out)
    for url in (request["published"]["url"], *request["template_urls"]):
        print(f"  TEMPLATE={url}", file=out)
    return request


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m pipelines.publish", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="KEY=VALUE, JSON or YAML settings file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    parser.add_argument("--tag", action="append", default=None, help="a tag (repeatable; replaces the defaults)")
    parser.add_argument("--dry-run", action="store_true", help="print the request as JSON, send nothing")
    args = parser.parse_args(argv)
    try:
        settings = load_publish_settings(args.config, overrides=parse_pairs(args.set, "--set"), tags=args.tag)
        publish(settings, dry_run=args.dry_run)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
