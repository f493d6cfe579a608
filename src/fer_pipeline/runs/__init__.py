"""The run record, the local run index, and ``fer-pipeline runs list|compare``.

- ``record``: one record per finished run (``run.json`` beside ``metrics.json``), the same
  on every path, and its flat views for Vertex AI Experiments;
- ``index``: the local run index (``build/runs.json``, ``build/local/runs.json``),
  rewritten atomically under a lock;
- ``compare``: the side-by-side table and the ``runs`` subcommands.

Every public name is importable from ``fer_pipeline.runs`` as before the split; patch a
name in the submodule that looks it up.
"""

from fer_pipeline.runs.compare import (
    LOWER_IS_BETTER,
    add_subcommands,
    cmd_runs_compare,
    cmd_runs_list,
    compare_table,
    differing_params,
)
from fer_pipeline.runs.index import (
    DEFAULT_INDEX,
    FORMAT_VERSION,
    INDEX_FILE,
    RUNS_ENV,
    RunIndex,
    RunIndexError,
    RunIndexFileError,
    default_index,
)
from fer_pipeline.runs.record import (
    NOT_PARAMETERS,
    RECORD_FILE,
    SUMMARY_METRICS,
    flat_metrics,
    flat_params,
    iso,
    load_histories,
    now_iso,
    pipeline_run_name,
    record_finished_run,
    run_id_for,
    run_record,
    summary_metrics,
    write_record,
)

__all__ = [
    "DEFAULT_INDEX",
    "FORMAT_VERSION",
    "INDEX_FILE",
    "LOWER_IS_BETTER",
    "NOT_PARAMETERS",
    "RECORD_FILE",
    "RUNS_ENV",
    "SUMMARY_METRICS",
    "RunIndex",
    "RunIndexError",
    "RunIndexFileError",
    "add_subcommands",
    "cmd_runs_compare",
    "cmd_runs_list",
    "compare_table",
    "default_index",
    "differing_params",
    "flat_metrics",
    "flat_params",
    "iso",
    "load_histories",
    "now_iso",
    "pipeline_run_name",
    "record_finished_run",
    "run_id_for",
    "run_record",
    "summary_metrics",
    "write_record",
]
