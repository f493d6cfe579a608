"""Create a Vertex AI pipeline schedule that retrains on a cron.

    python -m pipelines.schedule --cron "TZ=Europe/Amsterdam 0 3 * * 1" [--name NAME]
        [--max-concurrent 1] [--max-runs N] [--start-time ISO8601] [--end-time ISO8601]
        [--config config/submit.env] [--set KEY=VALUE ...] [--param NAME=VALUE ...] [--dry-run]

``make schedule CRON="..."`` runs it (``DRY_RUN=1`` prints the request and sends
nothing). The scheduled runs are exactly what ``make submit`` would send: the same
settings (config/submit.env, environment, ``--set``/``--param``), the same checks, the
same template (TEMPLATE: build/pipeline.yaml, or a template URL from ``make publish``,
whose spec is copied into the schedule when it is created), service account, network,
labels and parameters, EXPERIMENT and TENSORBOARD included. Cron times are UTC unless
prefixed with ``TZ=<IANA zone>``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from fer_pipeline.cli_parser import OneLineParser
from fer_pipeline.errors import ConfigError
from pipelines.settings import (
    DEFAULT_CONFIG,
    SettingsError,
    SubmitSettings,
    cli_overrides,
    load_settings,
)
from pipelines.submit import TemplateUnreachable, build_vertex_job, check_images, mark_unfetched_template

CRON_RE = re.compile(r"^((CRON_)?TZ=([A-Za-z0-9_+/-]+) )?((\S+ ){4}\S+)$")
# Each cron field's name, range and the names it also takes (Vertex AI reads unix-cron).
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {name: number for number, name in enumerate(_MONTHS, 1)}),
    ("day of week", 0, 7, {name: number for number, name in enumerate(_DAYS)}),
)
_CRON_ITEM = re.compile(r"^(\*|\w+(?:-\w+)?)(?:/(\d+))?$")


def _cron_error(message: str) -> SettingsError:
    return SettingsError([("CRON", message)], "schedule", None)


def check_cron(cron: str) -> str:
    """Five cron fields, each within its range, optionally after ``TZ=Zone/Name`` (an IANA zone)."""
    cron = " ".join(cron.split())
    match = CRON_RE.match(cron)
    if not match:
        raise _cron_error(
            "expected five cron fields, optionally after TZ=<IANA zone>, e.g. "
            f"'TZ=Europe/Amsterdam 0 3 * * 1'; got {cron!r}"
        )
    if match.group(3):
        _check_zone(match.group(3))
    for text, (name, low, high, names) in zip(match.group(4).split(), CRON_FIELDS, strict=True):
        if problem := _cron_field_problem(text, low, high, names):
            raise _cron_error(f"{name} field {text!r} in {cron!r}: {problem}")
    return cron


def _check_zone(zone: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _cron_error(f"TZ={zone} is not an IANA time zone; use a name such as Europe/Amsterdam or UTC") from None


def _cron_field_problem(text: str, low: int, high: int, names: dict[str, int]) -> str | None:
    """Why one cron field is not a list of ``*``, ``N`` or ``N-M`` (each with an optional ``/STEP``)
    within ``low``..``high``, or None."""
    allowed = f"{low}-{high}" + (f" or {min(names, key=names.get)}-{max(names, key=names.get)}" if names else "")
    for item in text.split(","):
        match = _CRON_ITEM.match(item)
        if not match:
            return f"expected *, N, N-M or a list of them, each with an optional /STEP ({allowed})"
        if match.group(2) is not None and int(match.group(2)) < 1:
            return "a /STEP must be 1 or more"
        if match.group(1) == "*":
            continue
        bounds = []
        for value in match.group(1).split("-"):
            number = names.get(value.upper()) if not value.isdecimal() else int(value)
            if number is None or not low <= number <= high:
                return f"{value!r} is outside {allowed}"
            bounds.append(number)
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            return f"the range {match.group(1)} runs backwards"
    return None


def build_schedule(settings: SubmitSettings, *, display_name: str, credentials=None, dry_run: bool = False):
    """The ``aiplatform.PipelineJobSchedule`` for these settings (nothing is sent; a dry run
    does not fetch a template URL)."""
    from google.cloud import aiplatform

    job = build_vertex_job(settings, credentials=credentials, dry_run=dry_run)
    return aiplatform.PipelineJobSchedule(
        pipeline_job=job,
        display_name=display_name,
        credentials=credentials,
        project=settings.project,
        location=settings.region,
    )


def _time(key: str, text: str | None):
    """An RFC 3339 time as an aware datetime (what the Schedule proto's Timestamp takes)."""
    if not text:
        return None
    from datetime import datetime, timezone

    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(
            [(key, f"expected an RFC 3339 time like 2026-01-31T03:00:00Z, got {text!r}")], "schedule", None
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _limit(key: str, value: int | None, minimum: int, what: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ConfigError(f"{key} must be {what}, got {value!r}.")
    return value


def schedule_options(settings: SubmitSettings, args: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``PipelineJobSchedule.create``, each checked."""
    start = _time("--start-time", args.get("start_time"))
    end = _time("--end-time", args.get("end_time"))
    if start and end and end <= start:
        raise ConfigError(
            f"--end-time {args['end_time']} is not after --start-time {args['start_time']}; no run could start."
        )
    max_runs = _limit("--max-runs", args.get("max_runs"), 0, "0 (no limit) or more runs")
    max_concurrent = _limit("--max-concurrent", args.get("max_concurrent"), 1, "1 or more runs at once")
    return {
        "cron": args["cron"],
        "start_time": start,
        "end_time": end,
        "max_run_count": max_runs or None,
        "max_concurrent_run_count": max_concurrent or 1,
        "service_account": settings.service_account or None,
        "network": settings.network or None,
    }


def schedule_request(schedule, options: dict[str, Any]) -> dict[str, Any]:
    """The CreateSchedule request ``schedule.create(**options)`` sends, as a JSON-able dict.

    The fields are set on a copy as ``PipelineJobSchedule._create`` sets them.
    """
    from google.protobuf import json_format

    resource = type(schedule._gca_resource).pb(schedule._gca_resource)
    message = type(resource)()
    message.CopyFrom(resource)
    message.cron = options["cron"]
    if options["start_time"]:
        message.start_time.FromDatetime(options["start_time"])
    if options["end_time"]:
        message.end_time.FromDatetime(options["end_time"])
    if options["max_run_count"]:
        message.max_run_count = options["max_run_count"]
    message.max_concurrent_run_count = options["max_concurrent_run_count"]
    if options["service_account"]:
        message.create_pipeline_job_request.pipeline_job.service_account = options["service_account"]
    if options["network"]:
        message.create_pipeline_job_request.pipeline_job.network = options["network"]
    return {
        "parent": schedule._parent,
        "schedule": json_format.MessageToDict(message, preserving_proto_field_name=True),
    }


def create_schedule(
    settings: SubmitSettings,
    *,
    cron: str,
    name: str = "",
    dry_run: bool = False,
    credentials=None,
    out=None,
    **limits: Any,
) -> dict:
    """Print the request (dry run) or create the schedule and print its console URL."""
    out = out or sys.stdout
    if settings.target != "vertex":
        raise ConfigError("Schedules are a Vertex AI feature; use TARGET=vertex (KFP has recurring runs of its own).")
    if dry_run and credentials is None:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # a dry run never calls Google
    display_name = name or f"{settings.pipeline_name}-retrain"
    options = schedule_options(settings, {"cron": check_cron(cron), **limits})  # checked before anything is built
    schedule = build_schedule(settings, display_name=display_name, credentials=credentials, dry_run=dry_run)
    request = schedule_request(schedule, options)
    check_images(request["schedule"]["create_pipeline_job_request"]["pipeline_job"], settings, dry_run=dry_run)
    if dry_run:
        mark_unfetched_template(request, request["schedule"]["create_pipeline_job_request"]["pipeline_job"], settings)
        print(json.dumps(request, indent=2, sort_keys=True), file=out)
        return request
    schedule.create(**options)
    print(f"created schedule {schedule.resource_name} ({options['cron']})", file=out)
    print(
        f"console: https://console.cloud.google.com/vertex-ai/pipelines/schedules?project={settings.project}", file=out
    )
    return request


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m pipelines.schedule", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cron", required=True, help='e.g. "TZ=Europe/Amsterdam 0 3 * * 1" (Mondays 03:00)')
    parser.add_argument("--name", default="", help="schedule display name (default: <pipeline>-retrain)")
    parser.add_argument("--max-concurrent", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--max-runs", type=int, default=0, help="stop after this many runs (0 = no limit)")
    parser.add_argument("--start-time", default="", help="RFC 3339 time of the first possible run")
    parser.add_argument("--end-time", default="", help="RFC 3339 time after which no run starts")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="KEY=VALUE, JSON or YAML settings file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="one pipeline parameter")
    parser.add_argument("--dry-run", action="store_true", help="print the request as JSON, send nothing")
    args = parser.parse_args(argv)
    try:
        overrides = cli_overrides(args.set, args.param)
        settings = load_settings("vertex", args.config, overrides=overrides)
        create_schedule(
            settings,
            cron=args.cron,
            name=args.name,
            dry_run=args.dry_run,
            max_concurrent=args.max_concurrent,
            max_runs=args.max_runs,
            start_time=args.start_time,
            end_time=args.end_time,
        )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except TemplateUnreachable as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
