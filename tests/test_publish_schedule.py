"""make publish and make schedule with no cloud: the template upload is caught at the
HTTP call kfp's RegistryClient makes, the schedule at ScheduleServiceClient.create_schedule.
Both dry runs print what would be sent and send nothing."""

# (no `from __future__ import annotations`: KFP reads the component annotations)

import json
import os
import re
from pathlib import Path
from unittest import mock

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud.aiplatform.compat.types import schedule as gca_schedule
from google.cloud.aiplatform_v1.services.schedule_service import ScheduleServiceClient
from google.protobuf import json_format
from kfp import compiler, dsl
from kfp.registry import registry_client

from fer_pipeline.errors import ConfigError
from pipelines import publish as publish_mod
from pipelines import schedule as schedule_mod
from pipelines.settings import SettingsError, load_settings

PROJECT, REGION = "my-project", "europe-west4"
ROOT = "gs://my-project-fer-pipeline/pipeline-root"
SA = "fer-pipeline-runner@my-project.iam.gserviceaccount.com"
NETWORK = "projects/123456/global/networks/fer-vpc"
REPO = f"https://{REGION}-kfp.pkg.dev/{PROJECT}/fer-pipeline-templates"
TB = f"projects/{PROJECT}/locations/{REGION}/tensorboards/42"


@dsl.component(base_image="europe-west4-docker.pkg.dev/p/r/cpu:abc", install_kfp_package=False)
def _echo(text: str, rate: float) -> str:
    return text + str(rate)


@dsl.pipeline(name="tiny-pipeline")
def _tiny(
    data_source: str,
    rate: float = 0.5,
    project: str = "",
    location: str = "us-central1",
    experiment: str = "",
    tensorboard: str = "",
    commit: str = "unknown",
):
    _echo(text=data_source, rate=rate)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "pipeline.yaml"
    compiler.Compiler().compile(_tiny, str(path), pipeline_parameters={"commit": "abc123def456"})
    return path


# ------------------------------------------------------------------ publish
@pytest.fixture()
def http_post():
    response = mock.Mock(text="tiny-pipeline/sha256:0123abcd")
    with mock.patch.object(registry_client.requests, "post", return_value=response) as post:
        yield post


def test_publish_uploads_the_template_with_commit_and_latest_tags(template, http_post, capsys):
    settings = publish_mod.load_publish_settings(None, environ={"TEMPLATE_REPOSITORY": REPO, "TEMPLATE": str(template)})
    publish_mod.publish(settings, auth=registry_client.ApiAuth("token-1"))

    http_post.assert_called_once()
    call = http_post.call_args.kwargs
    assert call["url"] == REPO
    assert call["data"] == {"tags": "abc123def456,latest"}
    assert call["headers"] == {"description": "tiny-pipeline compiled from commit abc123def456"}
    assert call["files"]["content"].name == str(template)
    assert isinstance(call["auth"], registry_client.ApiAuth) and call["auth"]._token == "token-1"
    out = capsys.readouterr().out
    assert f"TEMPLATE={REPO}/tiny-pipeline/sha256:0123abcd" in out
    assert f"TEMPLATE={REPO}/tiny-pipeline/latest" in out


def test_publish_dry_run_prints_the_same_request_and_sends_nothing(template, http_post, capsys):
    settings = publish_mod.load_publish_settings(
        None, environ={"TEMPLATE_REPOSITORY": REPO + "/", "TEMPLATE": str(template), "TEMPLATE_TAGS": "v1, stable"}
    )
    request = publish_mod.publish(settings, dry_run=True)  # no credentials: none are looked up
    http_post.assert_not_called()
    printed = json.loads(capsys.readouterr().out)
    assert printed == request
    assert printed["method"] == "POST" and printed["url"] == REPO
    assert printed["form"] == {"tags": "v1,stable"} and printed["file"] == str(template)
    assert printed["template_urls"] == [f"{REPO}/tiny-pipeline/v1", f"{REPO}/tiny-pipeline/stable"]


def test_publish_reports_every_problem(tmp_path):
    with pytest.raises(SettingsError) as info:
        publish_mod.load_publish_settings(
            None, environ={"TEMPLATE": str(tmp_path / "none.yaml")}, tags=["ok", "sha256:x", "bad tag"]
        )
    keys = [key for key, _ in info.value.problems]
    assert keys.count("TEMPLATE_TAGS") == 2 and "TEMPLATE_REPOSITORY" in keys and "TEMPLATE" in keys
    assert "make compile" in str(info.value)
    with pytest.raises(SettingsError, match="REGION-kfp.pkg.dev"):
        publish_mod.load_publish_settings(None, environ={"TEMPLATE_REPOSITORY": "https://example.com/x"})


def test_publish_names_a_list_given_where_text_belongs_as_submit_does(tmp_path):
    config = tmp_path / "publish.yaml"
    config.write_text(f"TEMPLATE_REPOSITORY: {REPO}\nTEMPLATE_TAGS: [a, b]\n")
    with pytest.raises(SettingsError) as info:
        publish_mod.load_publish_settings(config, environ={})
    assert ("TEMPLATE_TAGS", "expected text, got a list") in info.value.problems


def test_publish_main_exit_code(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TEMPLATE_REPOSITORY", raising=False)
    monkeypatch.delenv("TEMPLATE", raising=False)
    assert publish_mod.main(["--dry-run"]) == 2
    assert "TEMPLATE_REPOSITORY" in capsys.readouterr().err


# ------------------------------------------------------------------ schedule
def _env(template: Path, **extra: str) -> dict:
    return {
        "PROJECT": PROJECT,
        "REGION": REGION,
        "PIPELINE_ROOT": ROOT,
        "SERVICE_ACCOUNT": SA,
        "TEMPLATE": str(template),
        "PARAM_data_source": "gs://b/fer2013.zip",
        **extra,
    }


@pytest.fixture()
def created():
    calls = []

    def fake_create(self, request=None, *, parent=None, schedule=None, **kwargs):
        calls.append({"parent": parent, "schedule": schedule})
        response = gca_schedule.Schedule()
        response._pb.CopyFrom(gca_schedule.Schedule.pb(schedule))
        response.name = f"{parent}/schedules/987"
        return response

    with mock.patch.object(ScheduleServiceClient, "create_schedule", autospec=True, side_effect=fake_create):
        yield calls


def test_schedule_request_fields(template, created, capsys):
    settings = load_settings(
        "vertex",
        None,
        environ=_env(
            template, NETWORK=NETWORK, EXPERIMENT="fer-exp", TENSORBOARD=TB, LABELS="team=ml", PARAM_rate="0.1"
        ),
    )
    schedule_mod.create_schedule(
        settings,
        cron="TZ=Europe/Amsterdam  0 3 * * 1",
        credentials=AnonymousCredentials(),
        max_runs=10,
        start_time="2026-02-01T00:00:00Z",
    )
    assert len(created) == 1
    parent, schedule = created[0]["parent"], created[0]["schedule"]
    assert parent == f"projects/{PROJECT}/locations/{REGION}"
    assert schedule.display_name == "tiny-pipeline-retrain"
    assert schedule.cron == "TZ=Europe/Amsterdam 0 3 * * 1"
    assert schedule.max_concurrent_run_count == 1 and schedule.max_run_count == 10
    assert schedule.start_time.isoformat().startswith("2026-02-01T00:00:00")
    job = schedule.create_pipeline_job_request.pipeline_job
    assert job.service_account == SA and job.network == NETWORK
    assert job.runtime_config.gcs_output_directory == ROOT
    params = dict(job.runtime_config.parameter_values.items())
    assert params["data_source"] == "gs://b/fer2013.zip" and params["rate"] == 0.1
    # the run's experiment and TensorBoard reach the pipeline as parameters, as on submit
    assert params["experiment"] == "fer-exp" and params["tensorboard"] == TB
    assert params["project"] == PROJECT and params["location"] == REGION
    assert dict(job.labels) == {"app": "fer-pipeline", "commit": "abc123def456", "team": "ml"}
    assert job.pipeline_spec["pipelineInfo"]["name"] == "tiny-pipeline"
    assert "created schedule" in capsys.readouterr().out


def test_schedule_dry_run_equals_what_is_sent(template, created, capsys):
    settings = load_settings("vertex", None, environ=_env(template, NETWORK=NETWORK))
    options = dict(cron="0 4 * * *", name="nightly", max_concurrent=2, end_time="2027-01-01T00:00:00+01:00")
    dry = schedule_mod.create_schedule(settings, dry_run=True, **options)
    assert created == []
    assert json.loads(capsys.readouterr().out) == dry
    schedule_mod.create_schedule(settings, credentials=AnonymousCredentials(), **options)
    sent = json_format.MessageToDict(gca_schedule.Schedule.pb(created[0]["schedule"]), preserving_proto_field_name=True)
    assert sent == dry["schedule"] and created[0]["parent"] == dry["parent"]
    assert dry["schedule"]["cron"] == "0 4 * * *" and dry["schedule"]["max_concurrent_run_count"] == "2"
    assert dry["schedule"]["end_time"] == "2026-12-31T23:00:00Z"


@pytest.mark.parametrize("cron", ["every day", "0 3 * *", "TZ= 0 3 * * *"])
def test_schedule_refuses_a_bad_cron(template, created, cron):
    settings = load_settings("vertex", None, environ=_env(template))
    with pytest.raises(SettingsError, match="cron"):
        schedule_mod.create_schedule(settings, cron=cron, dry_run=True)
    assert created == []


def test_schedule_main_checks_settings_and_cron(template, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for key in ("PROJECT", "REGION", "PIPELINE_ROOT", "SERVICE_ACCOUNT", "TEMPLATE"):
        monkeypatch.delenv(key, raising=False)
    assert schedule_mod.main(["--cron", "0 3 * * 1", "--dry-run"]) == 2
    assert "SERVICE_ACCOUNT" in capsys.readouterr().err
    for key, value in _env(template).items():
        monkeypatch.setenv(key, value)
    assert schedule_mod.main(["--cron", "0 3 * * 1", "--dry-run", "--param", "rate=0.3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (
        printed["schedule"]["create_pipeline_job_request"]["pipeline_job"]["runtime_config"]["parameter_values"]["rate"]
        == 0.3
    )


def test_bad_experiment_and_tensorboard_settings_are_reported(template):
    with pytest.raises(SettingsError) as info:
        load_settings("vertex", None, environ=_env(template, EXPERIMENT="FER Exp", TENSORBOARD="tb-1"))
    assert {key for key, _ in info.value.problems} == {"EXPERIMENT", "TENSORBOARD"}


# ------------------------------------------------------------------ unknown keys, tags, schedule limits
def test_publish_refuses_unknown_keys_as_submit_does(template, tmp_path, http_post):
    config = tmp_path / "submit.env"
    config.write_text(f"TEMPLATE_REPOSITORY={REPO}\nTEMPLATE={template}\nTEMPLATE_TAG=v2\n")
    with pytest.raises(SettingsError) as info:
        publish_mod.load_publish_settings(config, environ={}, overrides={"FOO": "bar"})
    assert {key for key, _ in info.value.problems} == {"TEMPLATE_TAG", "FOO"}
    http_post.assert_not_called()


def test_make_publish_passes_tags_whole_so_a_tag_with_a_space_is_refused(template, tmp_path, capsys):
    import shlex
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG", "TAGS")}
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "publish", "DRY_RUN=1", "TAGS=v 1,stable"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    command = next(line for line in result.stdout.splitlines() if "pipelines.publish" in line)
    argv = shlex.split(command)
    assert argv[argv.index("--set") + 1] == "TEMPLATE_TAGS=v 1,stable" and "--tag" not in argv
    config = tmp_path / "submit.env"
    config.write_text(f"TEMPLATE_REPOSITORY={REPO}\nTEMPLATE={template}\n")
    assert publish_mod.main(["--config", str(config), "--set", "TEMPLATE_TAGS=v 1,stable", "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "tag 'v 1'" in captured.err and captured.out == ""


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_concurrent": -3}, "--max-concurrent must be 1 or more runs at once, got -3"),
        ({"max_concurrent": 0}, "--max-concurrent must be 1 or more runs at once, got 0"),
        ({"max_runs": -1}, "--max-runs must be 0 (no limit) or more runs, got -1"),
        (
            {"start_time": "2027-01-02T00:00:00Z", "end_time": "2027-01-01T00:00:00Z"},
            "--end-time 2027-01-01T00:00:00Z is not after --start-time 2027-01-02T00:00:00Z",
        ),
    ],
)
def test_schedule_refuses_limits_and_times_that_cannot_work(template, created, options, message):
    settings = load_settings("vertex", None, environ=_env(template))
    with pytest.raises(ConfigError, match=re.escape(message)):
        schedule_mod.create_schedule(settings, cron="0 3 * * 1", dry_run=True, **options)
    assert created == []


@pytest.mark.parametrize(
    "cron, message",
    [
        ("TZ=Not/AZone 0 3 * * 1", "TZ=Not/AZone is not an IANA time zone"),
        ("99 99 * * 9", "minute field '99'"),
        ("0 99 * * 1", "hour field '99'"),
        ("0 3 * * 9", "day of week field '9'"),
        ("foo bar baz qux quux", "minute field 'foo'"),
        ("*/0 3 * * *", "a /STEP must be 1 or more"),
        ("0 3 5-1 * *", "the range 5-1 runs backwards"),
        ("² * * * *", "minute field '²'"),  # a digit to str.isdigit, not to int()
    ],
)
def test_schedule_refuses_cron_fields_out_of_range(template, created, cron, message):
    settings = load_settings("vertex", None, environ=_env(template))
    with pytest.raises(SettingsError, match=re.escape(message)):
        schedule_mod.create_schedule(settings, cron=cron, dry_run=True)
    assert created == []


@pytest.mark.parametrize("cron", ["TZ=Europe/Amsterdam 0 3 * * 1", "*/15 0-6,22 1-31/2 JAN-MAR mon-fri", "0 0 * * 7"])
def test_schedule_takes_good_crons(template, created, cron, capsys):
    settings = load_settings("vertex", None, environ=_env(template))
    assert schedule_mod.create_schedule(settings, cron=cron, dry_run=True)["schedule"]["cron"] == cron


def test_schedule_dry_run_with_a_template_url_fetches_nothing(monkeypatch, capsys):
    from google.cloud import storage

    monkeypatch.setattr(storage, "Client", mock.Mock(side_effect=AssertionError("fetched in a dry run")))
    env = {**_env(Path("unused")), "TEMPLATE": "gs://bucket/pipeline.yaml"}
    request = schedule_mod.create_schedule(load_settings("vertex", None, environ=env), cron="0 3 * * 1", dry_run=True)
    assert "pipeline_spec" not in request["schedule"]["create_pipeline_job_request"]["pipeline_job"]
    assert "not fetched" in request["template"]
