"""pipelines/submit.py at its edges, with no cloud: caching that must not reach ingest and
register, each target's compiled file, template URLs (a dry run stays offline), wrong-typed
values from a JSON/YAML settings file, and parameters kind cannot use."""

import io
import json
from pathlib import Path
from unittest import mock

import pytest
from google.auth.credentials import AnonymousCredentials

from pipelines import submit as submit_mod
from pipelines.settings import SettingsError, load_settings

VERTEX_ENV = {
    "PROJECT": "my-project",
    "REGION": "europe-west4",
    "PIPELINE_ROOT": "gs://bucket/pipeline-root",
    "SERVICE_ACCOUNT": "sa@my-project.iam.gserviceaccount.com",
    "PARAM_data_source": "gs://bucket/fer2013.zip",
    "PARAM_data_prefix": "gs://bucket/data",
}
NEVER_CACHED = ("ingest", "register")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, Path]:
    from pipelines.compile import compile_pipelines

    return compile_pipelines(tmp_path_factory.mktemp("build"), "reg/cpu:abc", "reg/gpu:abc", commit="abc123")


def _tasks(spec: dict) -> dict[str, dict]:
    """Every task of the pipeline by name, the gated register included."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def _cached(task: dict) -> bool:
    return task.get("cachingOptions", {}).get("enableCache", False)


# ------------------------------------------------------------------ caching
@pytest.mark.parametrize("value", ["true", "1", ""])
def test_caching_on_never_caches_ingest_or_register_on_vertex(compiled, value):
    vertex, _ = compiled
    settings = load_settings("vertex", None, environ={**VERTEX_ENV, "TEMPLATE": str(vertex), "ENABLE_CACHING": value})
    request = submit_mod.submit(settings, dry_run=True, out=io.StringIO())
    tasks = _tasks(request["pipeline_job"]["pipeline_spec"])
    assert not any(_cached(tasks[name]) for name in NEVER_CACHED)
    assert _cached(tasks["train-frozen"]) and _cached(tasks["fine-tune"])  # the compiled defaults stay


def test_caching_off_turns_every_step_off_on_vertex(compiled):
    vertex, _ = compiled
    settings = load_settings("vertex", None, environ={**VERTEX_ENV, "TEMPLATE": str(vertex), "ENABLE_CACHING": "0"})
    request = submit_mod.submit(settings, dry_run=True, out=io.StringIO())
    assert not any(_cached(task) for task in _tasks(request["pipeline_job"]["pipeline_spec"]).values())


@pytest.mark.parametrize("value, sent", [("true", None), ("", None), ("false", False)])
def test_kfp_gets_no_caching_override_that_would_cache_ingest(compiled, value, sent):
    """kfp.Client rewrites every root task (ingest too) when enable_caching is a bool; None keeps the file's."""
    _, kfp_file = compiled
    settings = load_settings("kind", None, environ={"KFP_TEMPLATE": str(kfp_file), "ENABLE_CACHING": value})
    assert submit_mod.kfp_request(settings)["create_run_from_pipeline_package"]["enable_caching"] is sent


# ------------------------------------------------------------------ each target's file
def test_the_kfp_file_is_refused_for_vertex_and_the_vertex_file_for_kind(compiled):
    vertex, kfp_file = compiled
    with pytest.raises(SettingsError) as info:
        load_settings("vertex", None, environ={**VERTEX_ENV, "TEMPLATE": str(kfp_file)})
    assert dict(info.value.problems)["TEMPLATE"].startswith(
        f"{kfp_file} is the KFP file; Vertex takes build/pipeline.yaml"
    )
    with pytest.raises(SettingsError) as info:
        load_settings("kind", None, environ={"KFP_TEMPLATE": str(vertex)})
    assert dict(info.value.problems)["KFP_TEMPLATE"].startswith(
        f"{vertex} is the Vertex file; KFP takes build/pipeline-kfp.yaml"
    )


# ------------------------------------------------------------------ template URLs
@pytest.mark.parametrize(
    "url", ["https://europe-west4-kfp.pkg.dev/p/r/fer-emotion-training/latest", "gs://bucket/pipeline.yaml"]
)
def test_a_dry_run_with_a_template_url_fetches_nothing(url, capsys, monkeypatch):
    import urllib.request

    from google.cloud import storage

    monkeypatch.setattr(urllib.request, "urlopen", mock.Mock(side_effect=AssertionError("fetched in a dry run")))
    monkeypatch.setattr(storage, "Client", mock.Mock(side_effect=AssertionError("fetched in a dry run")))
    settings = load_settings("vertex", None, environ={**VERTEX_ENV, "TEMPLATE": url})
    request = submit_mod.submit(settings, dry_run=True)
    assert json.loads(capsys.readouterr().out) == request
    job = request["pipeline_job"]
    assert "pipeline_spec" not in job and "not fetched" in request["template"]
    assert job["runtime_config"]["parameter_values"]["data_source"] == "gs://bucket/fer2013.zip"
    assert job["service_account"] == VERTEX_ENV["SERVICE_ACCOUNT"]


def test_a_template_url_that_cannot_be_fetched_is_one_line(tmp_path, capsys, monkeypatch):
    url = "https://europe-west4-kfp.pkg.dev/p/r/fer-emotion-training/latest"  # offline: no such name; online: 401
    from google.cloud.aiplatform import initializer

    monkeypatch.setattr("google.auth.default", lambda **kwargs: (AnonymousCredentials(), None))
    monkeypatch.setattr(initializer.global_config, "_credentials", None)  # aiplatform caches what it found
    config = tmp_path / "submit.env"
    config.write_text("\n".join(f"{key}={value}" for key, value in {**VERTEX_ENV, "TEMPLATE": url}.items()))
    assert submit_mod.main(["--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: TEMPLATE={url} could not be fetched") and len(err.splitlines()) == 1, err


# ------------------------------------------------------------------ typed values from JSON/YAML
def test_wrong_typed_values_from_a_yaml_file_are_named_not_sent_as_python_text(compiled, tmp_path):
    vertex, _ = compiled
    config = tmp_path / "submit.yaml"
    config.write_text(
        f"PROJECT: [a, b]\nREGION: europe-west4\nPIPELINE_ROOT: gs://b/root\nSERVICE_ACCOUNT: {{x: 1}}\n"
        f"TEMPLATE: {vertex}\nLABELS: {{team: ml}}\nENABLE_CACHING: yes\n"
        "parameters:\n  data_source: 5\n  data_prefix: [gs://b/data]\n  accuracy_threshold: 0.7\n  gpu_count: 2\n"
    )
    with pytest.raises(SettingsError) as info:
        load_settings("vertex", config, environ={})
    problems = dict(info.value.problems)
    assert set(problems) == {"PROJECT", "SERVICE_ACCOUNT", "PARAM_data_source", "PARAM_data_prefix"}
    assert problems["PROJECT"] == "expected text, got a list"
    assert problems["SERVICE_ACCOUNT"] == "expected text, got a mapping"
    assert "expected text, got a number (5)" in problems["PARAM_data_source"]
    assert "expected text, got a list" in problems["PARAM_data_prefix"]


def test_numbers_for_numeric_parameters_still_work(compiled, tmp_path):
    vertex, _ = compiled
    config = tmp_path / "submit.json"
    config.write_text(
        json.dumps(
            {
                **{key: value for key, value in VERTEX_ENV.items() if not key.startswith("PARAM_")},
                "TEMPLATE": str(vertex),
                "parameters": {"data_source": "gs://b/x.zip", "data_prefix": "gs://b/d", "gpu_count": 2.0},
            }
        )
    )
    assert load_settings("vertex", config, environ={}).parameters["gpu_count"] == 2


# ------------------------------------------------------------------ kind
@pytest.mark.parametrize("param, value", [("gpu_count", "4"), ("gpu_type", "NVIDIA_L4")])
def test_gpu_parameters_are_refused_on_kind_where_the_file_fixes_them(compiled, param, value):
    _, kfp_file = compiled
    with pytest.raises(SettingsError) as info:
        load_settings("kind", None, environ={"KFP_TEMPLATE": str(kfp_file), f"PARAM_{param}": value})
    assert "GPU_COUNT= at `make compile`" in dict(info.value.problems)[f"PARAM_{param}"]


def test_images_vertex_cannot_pull_are_refused_and_a_dry_run_warns(compiled, capsys):
    """`make build compile` without REGISTRY= names the images fer-pipeline/...: only the
    machine that built them has them."""
    vertex, _ = compiled  # compiled with reg/cpu:abc and reg/gpu:abc
    settings = load_settings("vertex", None, environ={**VERTEX_ENV, "TEMPLATE": str(vertex)})
    submit_mod.submit(settings, dry_run=True)
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "reg/cpu:abc, reg/gpu:abc" in err and "REGISTRY=" in err
    with pytest.raises(submit_mod.ConfigError, match="no registry host"):
        submit_mod.submit(settings, credentials=AnonymousCredentials())
    assert submit_mod.local_images(
        {
            "pipeline_spec": {
                "deploymentSpec": {
                    "executors": {
                        "a": {"container": {"image": "europe-west4-docker.pkg.dev/p/r/cpu:t"}},
                        "b": {"container": {"image": "localhost/cpu:t"}},
                        "c": {"container": {"image": "localhost:5000/cpu:t"}},
                        "d": {"container": {"image": "fer-pipeline/fer-pipeline-cpu:t"}},
                    }
                }
            }
        }
    ) == ["fer-pipeline/fer-pipeline-cpu:t"]
