"""pipelines/submit.py and pipelines/settings.py, with no cloud: the Vertex request is
caught at PipelineServiceClient.create_pipeline_job, the KFP call at kfp.Client."""

# (no `from __future__ import annotations`: KFP reads the component annotations)

import io
import json
from pathlib import Path
from unittest import mock

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud.aiplatform.compat.types import pipeline_job as gca_pipeline_job
from google.cloud.aiplatform.utils import gcs_utils
from google.cloud.aiplatform_v1.services.pipeline_service import PipelineServiceClient
from kfp import compiler, dsl

from pipelines import settings as settings_mod
from pipelines import submit as submit_mod
from pipelines.settings import SettingsError, load_settings

PROJECT = "my-project"
REGION = "europe-west4"
ROOT = "gs://my-project-fer-pipeline/pipeline-root"
SA = "fer-pipeline@my-project.iam.gserviceaccount.com"
NETWORK = "projects/123456/global/networks/fer-vpc"


@dsl.component(base_image="europe-west4-docker.pkg.dev/p/r/cpu:abc", install_kfp_package=False)
def _echo(text: str, times: int, rate: float, flag: bool) -> str:
    return text * times + str(rate) + str(flag)


@dsl.pipeline(name="tiny-pipeline")
def _tiny(
    data_source: str,
    times: int = 2,
    rate: float = 0.5,
    flag: bool = False,
    project: str = "",
    location: str = "us-central1",
    commit: str = "unknown",
):
    _echo(text=data_source, times=times, rate=rate, flag=flag)


@pytest.fixture(scope="module")
def tiny_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "pipeline.yaml"
    compiler.Compiler().compile(_tiny, str(path), pipeline_parameters={"commit": "Abc123Def"})
    return path


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, Path]:
    """The project's real pipeline, both targets (pipelines/compile.py)."""
    from pipelines.compile import compile_pipelines

    out = tmp_path_factory.mktemp("build")
    return compile_pipelines(
        out,
        "europe-west4-docker.pkg.dev/p/r/fer-pipeline-cpu:abc",
        "europe-west4-docker.pkg.dev/p/r/fer-pipeline-gpu:abc",
        commit="abc123",
    )


def _env(template: Path, **extra: str) -> dict[str, str]:
    env = {
        "PROJECT": PROJECT,
        "REGION": REGION,
        "PIPELINE_ROOT": ROOT,
        "SERVICE_ACCOUNT": SA,
        "TEMPLATE": str(template),
    }
    env.update(extra)
    return env


@pytest.fixture()
def captured():
    """Catch create_pipeline_job (and the bucket check submit() makes) on the client class."""
    calls = []

    def fake_create(self, request=None, *, parent=None, pipeline_job=None, pipeline_job_id=None, **kwargs):
        calls.append({"parent": parent, "pipeline_job": pipeline_job, "pipeline_job_id": pipeline_job_id})
        response = gca_pipeline_job.PipelineJob()
        response._pb.CopyFrom(gca_pipeline_job.PipelineJob.pb(pipeline_job))
        response.name = f"{parent}/pipelineJobs/{pipeline_job_id}"
        return response

    with (
        mock.patch.object(PipelineServiceClient, "create_pipeline_job", autospec=True, side_effect=fake_create),
        mock.patch.object(gcs_utils, "create_gcs_bucket_for_pipeline_artifacts_if_it_does_not_exist"),
    ):
        yield calls


# ------------------------------------------------------------------ Vertex
def test_vertex_request_fields(tiny_template, tmp_path, captured, capsys):
    config = tmp_path / "submit.env"
    config.write_text(
        f"# comment\nNETWORK={NETWORK}\nLABELS=team=ml,env=dev\nENABLE_CACHING=false\n"
        "PARAM_data_source=gs://bucket/fer2013.zip\nPARAM_times=3\nPARAM_rate='0.25'\nPARAM_flag=yes\n"
    )
    settings = load_settings("vertex", config, environ=_env(tiny_template))
    submit_mod.submit(settings, credentials=AnonymousCredentials())

    assert len(captured) == 1
    call = captured[0]
    job = call["pipeline_job"]
    assert call["parent"] == f"projects/{PROJECT}/locations/{REGION}"
    assert call["pipeline_job_id"].startswith("tiny-pipeline-")
    assert job.service_account == SA
    assert job.network == NETWORK
    assert job.runtime_config.gcs_output_directory == ROOT
    params = {k: v for k, v in job.runtime_config.parameter_values.items()}
    assert params["data_source"] == "gs://bucket/fer2013.zip"
    assert params["times"] == 3 and params["rate"] == 0.25 and params["flag"] is True
    # project/location filled from the settings
    assert params["project"] == PROJECT and params["location"] == REGION
    assert dict(job.labels) == {"app": "fer-pipeline", "commit": "abc123def", "team": "ml", "env": "dev"}
    out = capsys.readouterr().out
    assert f"https://console.cloud.google.com/vertex-ai/locations/{REGION}/pipelines/runs/" in out
    assert f"project={PROJECT}" in out


def test_no_network_means_none_sent(tiny_template, captured):
    settings = load_settings("vertex", None, environ=_env(tiny_template, PARAM_data_source="x"))
    submit_mod.submit(settings, credentials=AnonymousCredentials())
    assert captured[0]["pipeline_job"].network == ""


def test_dry_run_prints_the_request_and_sends_nothing(tiny_template, captured, capsys):
    env = _env(tiny_template, NETWORK=NETWORK, PARAM_data_source="gs://b/x.zip", EXPERIMENT="fer-exp")
    settings = load_settings("vertex", None, environ=env)
    request = submit_mod.submit(settings, dry_run=True)  # no credentials needed
    assert captured == []
    printed = json.loads(capsys.readouterr().out)
    assert printed == request
    assert printed["parent"] == f"projects/{PROJECT}/locations/{REGION}"
    job = printed["pipeline_job"]
    assert job["service_account"] == SA and job["network"] == NETWORK
    assert job["runtime_config"]["gcs_output_directory"] == ROOT
    assert job["runtime_config"]["parameter_values"]["data_source"] == "gs://b/x.zip"
    assert printed["experiment"] == "fer-exp"
    assert job["pipeline_spec"]["pipelineInfo"]["name"] == "tiny-pipeline"


def test_dry_run_equals_what_is_sent(tiny_template, captured, capsys):
    from google.protobuf import json_format

    env = _env(tiny_template, NETWORK=NETWORK, PARAM_data_source="d", JOB_ID="fixed-id")
    settings = load_settings("vertex", None, environ=env)
    dry = submit_mod.submit(settings, dry_run=True)
    submit_mod.submit(settings, credentials=AnonymousCredentials())
    sent = json_format.MessageToDict(
        gca_pipeline_job.PipelineJob.pb(captured[0]["pipeline_job"]), preserving_proto_field_name=True
    )
    assert sent == dry["pipeline_job"]
    assert captured[0]["parent"] == dry["parent"] and captured[0]["pipeline_job_id"] == "fixed-id"


def test_missing_settings_are_reported_together(tiny_template, tmp_path):
    config = tmp_path / "submit.env"
    config.write_text(f"TEMPLATE={tiny_template}\nPARAM_times=many\nPARAM_nope=1\nLABELS=Bad=1\nBOGUS=1\n")
    with pytest.raises(SettingsError) as info:
        load_settings("vertex", config, environ={})
    keys = {key for key, _ in info.value.problems}
    assert {"PROJECT", "REGION", "PIPELINE_ROOT", "SERVICE_ACCOUNT"} <= keys
    assert {"PARAM_data_source", "PARAM_times", "PARAM_nope", "LABELS", "BOGUS"} <= keys
    message = str(info.value)
    for key in ("PROJECT", "REGION", "PIPELINE_ROOT", "SERVICE_ACCOUNT", "PARAM_data_source"):
        assert f"- {key}:" in message
    assert str(config) in message  # where to set them


def test_missing_template_is_named(tmp_path):
    with pytest.raises(SettingsError) as info:
        load_settings("vertex", None, environ=_env(tmp_path / "none.yaml"))
    assert "make compile" in str(info.value)


def test_precedence_file_env_override(tiny_template, tmp_path):
    config = tmp_path / "s.json"
    config.write_text(
        json.dumps(
            {
                "project": "from-file",
                "region": REGION,
                "pipeline_root": ROOT,
                "service_account": SA,
                "template": str(tiny_template),
                "parameters": {"data_source": "file", "times": 5},
            }
        )
    )
    settings = load_settings("vertex", config, environ={"PROJECT": "from-env"}, overrides={"PARAM_data_source": "cli"})
    assert settings.project == "from-env"
    assert settings.parameters["data_source"] == "cli" and settings.parameters["times"] == 5


def test_named_config_must_exist(tmp_path):
    with pytest.raises(settings_mod.ConfigError, match="not found"):
        load_settings("vertex", tmp_path / "absent.env", environ={})


def test_example_config_parses_and_lists_only_known_keys():
    values = settings_mod.read_config(Path("config/submit.example.env"))
    assert {"PROJECT", "REGION", "PIPELINE_ROOT", "SERVICE_ACCOUNT", "PARAM_data_source"} <= set(values)
    assert all(settings_mod.known_key(key) for key in values)


def test_main_exit_code_and_message(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in settings_mod.KEYS:
        monkeypatch.delenv(key, raising=False)
    assert submit_mod.main(["--target", "vertex"]) == 2
    err = capsys.readouterr().err
    assert "PROJECT" in err and "SERVICE_ACCOUNT" in err and "make compile" in err


# ------------------------------------------------------------------ the project's pipeline
def test_real_pipeline_vertex_request(compiled, captured):
    vertex, _ = compiled
    env = _env(
        vertex,
        PARAM_data_source="gs://b/fer2013.zip",
        PARAM_data_prefix="gs://b/data",
        PARAM_frozen_epochs="2",
        PARAM_max_train_samples="200",
        PARAM_allow_conversion="true",
    )
    settings = load_settings("vertex", None, environ=env)
    submit_mod.submit(settings, credentials=AnonymousCredentials())
    job = captured[0]["pipeline_job"]
    params = dict(job.runtime_config.parameter_values.items())
    # recipe fields given by name travel in the one recipe parameter, typed
    assert params["data_source"] == "gs://b/fer2013.zip" and params["recipe"] == {
        "frozen_epochs": 2,
        "max_train_samples": 200,
    }
    assert params["allow_conversion"] is True and params["project"] == PROJECT
    assert job.service_account == SA and job.runtime_config.gcs_output_directory == ROOT
    assert job.labels["commit"] == "abc123"


@pytest.mark.parametrize("data", ["", "fer2013.zip"])
def test_a_vertex_dry_run_with_preset_cpu_resolves_the_recipe_run_local_resolves(compiled, data):
    from fer_pipeline.recipe import from_parameters
    from pipelines.run_local import parse_args, pipeline_arguments

    vertex, _ = compiled
    env = _env(vertex, PARAM_data_source="gs://b/fer2013.zip", PARAM_data_prefix="gs://b/data", PARAM_preset="cpu")
    request = submit_mod.submit(load_settings("vertex", None, environ=env), dry_run=True, out=io.StringIO())
    sent = request["pipeline_job"]["runtime_config"]["parameter_values"]
    local = pipeline_arguments(parse_args(["--preset", "cpu"] + (["--data", data] if data else [])), data or "s.zip")
    assert from_parameters(sent) == from_parameters(local)
    assert from_parameters(sent).train.backbone == "compact"


def test_real_pipeline_requires_its_data_parameters(compiled):
    vertex, _ = compiled
    with pytest.raises(SettingsError) as info:
        load_settings("vertex", None, environ=_env(vertex))
    keys = {key for key, _ in info.value.problems}
    assert keys == {"PARAM_data_source", "PARAM_data_prefix"}


@pytest.mark.parametrize(
    "param, value, message",
    [
        ("accuracy_threshold", "nan", "expected a finite number, got 'nan'"),
        ("accuracy_threshold", "2", "must be an accuracy in [0, 1], got 2.0"),
        ("gpu_count", "-1", "must be a GPU count per machine from 0 to 16, got -1"),
        ("finetune_replicas", "0", "must be 1 or more machines, got 0"),
        ("primary_metric", "log_loss", "must be one of macro_f1, accuracy"),
        ("gpu_type", "NOT_A_GPU", "must be a Vertex AI accelerator type"),
    ],
)
def test_the_pipelines_own_parameters_are_checked_before_sending(compiled, param, value, message):
    """A wrong one would fail only at its step, after the training, or as a protobuf traceback."""
    vertex, _ = compiled
    env = _env(
        vertex, PARAM_data_source="gs://b/fer2013.zip", PARAM_data_prefix="gs://b/data", **{f"PARAM_{param}": value}
    )
    with pytest.raises(SettingsError) as info:
        load_settings("vertex", None, environ=env)
    problems = dict(info.value.problems)
    assert message in problems[f"PARAM_{param}"], problems


def test_a_recipe_field_given_both_ways_must_agree(compiled):
    vertex, _ = compiled
    data = {"PARAM_data_source": "gs://b/fer2013.zip", "PARAM_data_prefix": "gs://b/data"}
    env = _env(vertex, **data, PARAM_recipe='{"frozen_epochs": 3}', PARAM_frozen_epochs="5")
    with pytest.raises(SettingsError) as info:
        load_settings("vertex", None, environ=env)
    assert dict(info.value.problems)["PARAM_frozen_epochs"] == "5 here, 3 in PARAM_recipe; give it once"
    agreeing = _env(vertex, **data, PARAM_recipe='{"frozen_epochs": 5, "frozen_lr": 0.002}', PARAM_frozen_epochs="5")
    assert load_settings("vertex", None, environ=agreeing).parameters["recipe"] == {
        "frozen_epochs": 5,
        "frozen_lr": 0.002,
    }


def test_a_region_vertex_lacks_and_missing_credentials_are_one_line(tiny_template, tmp_path, capsys, monkeypatch):
    config = tmp_path / "submit.env"
    for key in settings_mod.KEYS:
        monkeypatch.delenv(key, raising=False)
    config.write_text("\n".join(f"{k}={v}" for k, v in _env(tiny_template, PARAM_data_source="x").items()))
    assert submit_mod.main(["--config", str(config), "--dry-run", "--set", "REGION=mars-west9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Vertex AI refuses these settings: Unsupported region") and "\n" not in err

    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_credentials(*args, **kwargs):
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    assert submit_mod.main(["--config", str(config)]) == 1  # a real submit, offline
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no usable Google Cloud credentials") and "DRY_RUN=1" in err and "\n" not in err


# ------------------------------------------------------------------ KFP (kind)
def test_kfp_client_call(compiled, monkeypatch, capsys):
    import kfp

    _, kfp_file = compiled
    client = mock.MagicMock()
    client.create_run_from_pipeline_package.return_value = mock.Mock(run_id="run-1")
    factory = mock.Mock(return_value=client)
    monkeypatch.setattr(kfp, "Client", factory)
    env = {
        "KFP_HOST": "http://localhost:9999",
        "KFP_TEMPLATE": str(kfp_file),
        "KFP_EXPERIMENT": "fer",
        "PARAM_data_source": "/data/fer2013.zip",
        "PARAM_data_prefix": "gs://fake/data",
        "PARAM_frozen_epochs": "1",
        "ENABLE_CACHING": "0",
    }
    settings = load_settings("kind", None, environ=env)
    submit_mod.submit(settings)

    factory.assert_called_once_with(host="http://localhost:9999", namespace="kubeflow")
    kwargs = client.create_run_from_pipeline_package.call_args.kwargs
    assert kwargs["pipeline_file"] == str(kfp_file)
    assert kwargs["arguments"] == {
        "data_source": "/data/fer2013.zip",
        "data_prefix": "gs://fake/data",
        "recipe": {"frozen_epochs": 1},
    }
    assert kwargs["experiment_name"] == "fer" and kwargs["enable_caching"] is False
    assert "project" not in kwargs["arguments"]  # no Vertex auto-fill on kind
    assert "run-1" in capsys.readouterr().out


def test_a_kfp_that_does_not_answer_is_one_line_naming_the_host_and_the_fix(compiled, tmp_path, monkeypatch, capsys):
    import socket

    _, kfp_file = compiled
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for key, value in {"KFP_HOST": host, "KFP_TEMPLATE": str(kfp_file)}.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "none.env").write_text("")
    assert submit_mod.main(["--target", "kind", "--config", str(tmp_path / "none.env")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: KFP at KFP_HOST={host} did not answer") and "make kfp-forward" in err
    assert len(err.splitlines()) == 1, err


def test_kfp_dry_run_sends_nothing(compiled, monkeypatch, capsys):
    import kfp

    _, kfp_file = compiled
    monkeypatch.setattr(kfp, "Client", mock.Mock(side_effect=AssertionError("no client in a dry run")))
    env = {"KFP_TEMPLATE": str(kfp_file), "PARAM_data_source": "a", "PARAM_data_prefix": "b"}
    request = submit_mod.submit(load_settings("kind", None, environ=env), dry_run=True)
    assert json.loads(capsys.readouterr().out) == request
    assert request["host"] == settings_mod.DEFAULT_KFP_HOST


def test_kind_needs_no_settings_at_all(compiled, capsys):
    """The kind file's defaults are the in-cluster emulator and the registry volume."""
    from pipelines.resources import PROFILES

    _, kfp_file = compiled
    request = submit_mod.submit(load_settings("kind", None, environ={"KFP_TEMPLATE": str(kfp_file)}), dry_run=True)
    assert json.loads(capsys.readouterr().out) == request
    storage = PROFILES["kind"].storage
    in_effect = request["parameters_in_effect"]
    assert (
        in_effect["data_prefix"].startswith(f"gs://{storage.bucket}/")
        and in_effect["registry"] == storage.registry_mount
    )
    assert request["create_run_from_pipeline_package"]["arguments"] == {}
    assert "gpu_count" not in in_effect and "gpu_type" not in in_effect  # the compiled GPU request decides


def test_kind_still_checks_parameters(compiled):
    _, kfp_file = compiled
    with pytest.raises(SettingsError) as info:
        load_settings(
            "kind", None, environ={"KFP_TEMPLATE": str(kfp_file), "PARAM_frozen_epochs": "many", "PARAM_nope": "1"}
        )
    assert {key for key, _ in info.value.problems} == {"PARAM_frozen_epochs", "PARAM_nope"}


# ------------------------------------------------------------------ terraform outputs -> config
def test_terraform_outputs_update_the_config(tmp_path):
    config = tmp_path / "submit.env"
    config.write_text("# keep me\nPROJECT=old\nPARAM_data_source=gs://x\n")
    outputs = {
        "project_id": {"value": "p1"},
        "region": {"value": REGION},
        "network": {"value": ""},
        "pipeline_root": {"value": ROOT},
        "service_account_email": {"value": SA},
        "docker_registry": {"value": f"{REGION}-docker.pkg.dev/p1/fer-pipeline"},
    }
    settings_mod.update_env_file(config, settings_mod.terraform_values(outputs))
    values = settings_mod.read_env_file(config)
    assert config.read_text().startswith("# keep me\nPROJECT=p1\n")
    assert values["PARAM_data_source"] == "gs://x" and values["SERVICE_ACCOUNT"] == SA
    assert "NETWORK" not in values
    assert values["REGISTRY"] == f"{REGION}-docker.pkg.dev/p1/fer-pipeline"
