"""Vertex AI Experiments and TensorBoard: each pipeline run becomes one experiment run
with its parameters and final metrics, so that runs line up in the console's comparison
table; each training phase streams its TensorBoard logs to a Vertex AI TensorBoard.

The record is the one ``fer_pipeline.runs`` builds (``run.json`` beside the metrics);
``log_run`` writes it through the Vertex AI SDK's experiment API::

    MetadataService.GetMetadataStore / GetContext / CreateContext   the experiment (system.Experiment)
    MetadataService.CreateContext + AddContextChildren              the run (system.ExperimentRun)
    MetadataService.UpdateContext                                   params, metrics, state COMPLETE

The evaluation component calls :func:`log_run_or_warn` when the pipeline parameter
``experiment`` is set (``EXPERIMENT`` in config/submit.env): every run is logged,
registered or not. The pipeline service account's ``roles/aiplatform.user`` covers it.

The training components wrap each phase in :func:`vertex_upload` when the pipeline
parameter ``tensorboard`` is set (``TENSORBOARD``: ``projects/P/locations/L/tensorboards/ID``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fer_pipeline.errors import ConfigError
from fer_pipeline.runs import flat_metrics, flat_params

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_INVALID = re.compile(r"[^a-z0-9-]+")
MAX_CONTEXT_ID = 128  # the run's context id is "<experiment>-<run>"
UPLOAD_FLUSH_SECONDS = 5  # the Vertex uploader polls every second; wait for its last poll
_TB_NAME = re.compile(r"[^a-z0-9-]+")


def check_experiment_name(name: str) -> str:
    """Vertex experiment names: lowercase letters, digits and '-', at most 128 characters."""
    if not _NAME.match(name or ""):
        raise ConfigError(
            f"Experiment name {name!r} is invalid: use lowercase letters, digits and '-', "
            "starting with a letter or digit (at most 128 characters)."
        )
    return name


def run_name(run_id: str, experiment: str) -> str:
    """A valid experiment-run name for ``run_id`` (a pipeline job name, usually already valid)."""
    name = _INVALID.sub("-", run_id.lower()).strip("-") or "run"
    room = MAX_CONTEXT_ID - len(experiment) - 1
    return name[-room:].strip("-") if len(name) > room else name


def log_run(
    record: dict[str, Any],
    *,
    experiment: str,
    project: str,
    location: str,
    credentials=None,
    description: str = "fer-pipeline training runs",
) -> str:
    """Log one run record (params, metrics) as a completed run of ``experiment``; created if absent.

    Logging the same run again (a retried evaluation) updates it instead of failing.

    Returns:
        The experiment run's resource name.
    """
    from google.api_core import exceptions
    from google.cloud import aiplatform
    from google.cloud.aiplatform.compat.types import execution as gca_execution
    from google.cloud.aiplatform.metadata.experiment_resources import Experiment
    from google.cloud.aiplatform.metadata.experiment_run_resource import ExperimentRun

    check_experiment_name(experiment)
    if not project or not location:
        raise ConfigError("Logging to a Vertex AI experiment needs the project and the location (region).")
    name = run_name(str(record.get("run_id") or "run"), experiment)
    aiplatform.init(project=project, location=location, credentials=credentials)
    where = {"project": project, "location": location, "credentials": credentials}
    found = Experiment.get_or_create(experiment_name=experiment, description=description, **where)
    try:
        run = ExperimentRun.create(name, experiment=found, **where)
    except exceptions.AlreadyExists:
        run = ExperimentRun(name, experiment=found, **where)
    run.log_params(flat_params(record))
    run.log_metrics(flat_metrics(record))
    run.update_state(gca_execution.Execution.State.COMPLETE)
    log.info("Experiment %s: logged run %s (%s).", experiment, name, run.resource_name)
    return run.resource_name


def log_run_or_warn(record: dict[str, Any], *, experiment: str, project: str, location: str) -> str | None:
    """:func:`log_run` for a pipeline step: a failure is logged, never fails the run; "" logs nothing."""
    if not experiment:
        return None
    try:
        return log_run(record, experiment=experiment, project=project, location=location)
    except Exception:  # bookkeeping must not fail a finished evaluation (run.json keeps the record)
        log.exception("Could not log the run to Vertex AI experiment %r; the record stays in run.json.", experiment)
        return None


# ------------------------------------------------------------------ TensorBoard
def parse_tensorboard(resource: str) -> tuple[str, str, str]:
    """(project, location, id) of ``projects/P/locations/L/tensorboards/ID``."""
    match = re.fullmatch(r"projects/([^/]+)/locations/([^/]+)/tensorboards/([^/]+)", resource.strip())
    if not match:
        raise ConfigError(
            f"TensorBoard {resource!r} is not a resource name projects/PROJECT/locations/REGION/tensorboards/ID "
            "(terraform -chdir=infra/gcp output -raw tensorboard)."
        )
    return match.group(1), match.group(2), match.group(3)


def tensorboard_name(text: str, fallback: str = "fer-pipeline") -> str:
    """A Vertex TensorBoard experiment/run name: lowercase letters, digits and '-'."""
    name = _TB_NAME.sub("-", text.lower()).strip("-")[:100].strip("-")
    return name or fallback


@contextlib.contextmanager
def vertex_upload(tensorboard: str, logdir: str | Path, *, experiment: str, run_prefix: str) -> Iterator[None]:
    """Stream ``logdir`` to a Vertex AI TensorBoard while the block runs (no-op for an empty name).

    Args:
        tensorboard: ``projects/P/locations/L/tensorboards/ID``, or "" to do nothing.
        logdir: The phase's TensorBoard directory.
        experiment: TensorBoard experiment (the Vertex experiment, or the pipeline name).
        run_prefix: Prefix of the TensorBoard runs (the pipeline run and the phase), so
            that runs of several pipeline runs sit side by side in one experiment.
    """
    if not tensorboard:
        yield
        return
    from google.cloud import aiplatform

    project, location, tensorboard_id = parse_tensorboard(tensorboard)
    Path(logdir).mkdir(parents=True, exist_ok=True)
    aiplatform.init(project=project, location=location)
    aiplatform.start_upload_tb_log(
        tensorboard_id=tensorboard_id,
        tensorboard_experiment_name=tensorboard_name(experiment),
        logdir=str(logdir),
        run_name_prefix=tensorboard_name(run_prefix) + "-",
        project=project,
        location=location,
    )
    log.info("TensorBoard: streaming %s to %s (experiment %s).", logdir, tensorboard, tensorboard_name(experiment))
    try:
        yield
    finally:
        time.sleep(UPLOAD_FLUSH_SECONDS)  # let the uploader pick up the last epoch and the image
        aiplatform.end_upload_tb_log()
