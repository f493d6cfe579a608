"""pipelines/deploy.py and fer_pipeline/cloud/vertex_deploy.py with no cloud: every Vertex
call is caught on the aiplatform_v1 client classes, every Cloud Storage call on storage."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pytest

pytest.importorskip("google.cloud.aiplatform_v1")
from google.api_core import exceptions as api_exceptions  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import aiplatform_v1  # noqa: E402

from fer_pipeline import storage  # noqa: E402
from fer_pipeline.cloud.vertex_deploy import traffic_split  # noqa: E402
from fer_pipeline.errors import FerError  # noqa: E402
from pipelines import deploy as deploy_cli  # noqa: E402
from pipelines.settings_file import KEYS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROJECT, REGION = "my-project", "europe-west4"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
FAMILY = f"{PARENT}/models/123"
SA = "serving@my-project.iam.gserviceaccount.com"
PIPELINE_ROOT = "gs://my-bucket/pipeline-root"
VERSIONS = {"champion": "3", "challenger": "4", "3": "3", "4": "4"}


class FakeVertex:
    """The calls the clients receive, and what the service would answer."""

    def __init__(self):
        self.calls: list[tuple[str, object]] = []
        self.endpoints: list[aiplatform_v1.Endpoint] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def request(self, name: str):
        return next(request for called, request in self.calls if called == name)

    # ModelService
    def list_models(self, client, request=None, **kwargs):
        self.calls.append(("list_models", request))
        return [aiplatform_v1.Model(name=FAMILY, display_name="fer-emotion", version_aliases=["default", "champion"])]

    def get_model(self, client, request=None, *, name=None, **kwargs):
        self.calls.append(("get_model", name))
        family, _, version = name.partition("@")
        if family != FAMILY or version not in VERSIONS:
            raise api_exceptions.NotFound(name)
        aliases = [alias for alias, number in VERSIONS.items() if number == VERSIONS[version] and not alias.isdigit()]
        return aiplatform_v1.Model(
            name=FAMILY, display_name="fer-emotion", version_id=VERSIONS[version], version_aliases=aliases
        )

    # EndpointService
    def list_endpoints(self, client, request=None, **kwargs):
        self.calls.append(("list_endpoints", request))
        return list(self.endpoints)

    def get_endpoint(self, client, request=None, *, name=None, **kwargs):
        self.calls.append(("get_endpoint", name))
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint
        raise api_exceptions.NotFound(name)

    def create_endpoint(self, client, request=None, **kwargs):
        self.calls.append(("create_endpoint", request))
        created = aiplatform_v1.Endpoint(name=f"{request.parent}/endpoints/{request.endpoint_id or '555'}")
        return mock.Mock(result=mock.Mock(return_value=created))

    def deploy_model(self, client, request=None, **kwargs):
        self.calls.append(("deploy_model", request))
        response = aiplatform_v1.DeployModelResponse(deployed_model=aiplatform_v1.DeployedModel(id="999"))
        return mock.Mock(result=mock.Mock(return_value=response))

    # JobService
    def create_batch_prediction_job(self, client, request=None, **kwargs):
        self.calls.append(("create_batch_prediction_job", request))
        job = aiplatform_v1.BatchPredictionJob(request.batch_prediction_job)
        job.name = f"{PARENT}/batchPredictionJobs/77"
        job.state = aiplatform_v1.JobState.JOB_STATE_PENDING
        return job


@pytest.fixture()
def vertex(monkeypatch):
    for key in KEYS:  # the developer's own settings stay out of the tests
        monkeypatch.delenv(key, raising=False)
    fake = FakeVertex()
    patches = [
        mock.patch.object(aiplatform_v1.ModelServiceClient, name, autospec=True, side_effect=getattr(fake, name))
        for name in ("list_models", "get_model")
    ]
    patches += [
        mock.patch.object(aiplatform_v1.EndpointServiceClient, name, autospec=True, side_effect=getattr(fake, name))
        for name in ("list_endpoints", "get_endpoint", "create_endpoint", "deploy_model")
    ]
    patches.append(
        mock.patch.object(
            aiplatform_v1.JobServiceClient,
            "create_batch_prediction_job",
            autospec=True,
            side_effect=fake.create_batch_prediction_job,
        )
    )
    for patch in patches:
        patch.start()
    yield fake
    for patch in patches:
        patch.stop()


@pytest.fixture()
def config(tmp_path) -> Path:
    path = tmp_path / "submit.env"
    path.write_text(
        f"PROJECT={PROJECT}\nREGION={REGION}\nSERVICE_ACCOUNT={SA}\nPIPELINE_ROOT={PIPELINE_ROOT}\nLABELS=team=ml\n"
    )
    return path


def run(config: Path, *argv: str) -> int:
    command, *rest = argv
    return deploy_cli.main([command, "--config", str(config), *rest], credentials=AnonymousCredentials())


def serving_endpoint(deployed: dict[str, str], split: dict[str, int]) -> aiplatform_v1.Endpoint:
    return aiplatform_v1.Endpoint(
        name=f"{PARENT}/endpoints/fer-emotion",
        display_name="fer-emotion",
        deployed_models=[
            aiplatform_v1.DeployedModel(id=model_id, model=FAMILY, model_version_id=version)
            for model_id, version in deployed.items()
        ],
        traffic_split=split,
    )


# ------------------------------------------------------------------ deploy
def test_champion_goes_to_a_new_endpoint_with_all_traffic(vertex, config, capsys):
    assert run(config, "deploy") == 0

    assert vertex.names() == ["list_models", "get_model", "list_endpoints", "create_endpoint", "deploy_model"]
    assert vertex.request("list_models").filter == 'display_name="fer-emotion"'
    assert vertex.request("get_model") == f"{FAMILY}@champion"
    assert vertex.request("list_endpoints").filter == 'display_name="fer-emotion"'
    create = vertex.request("create_endpoint")
    assert create.parent == PARENT and create.endpoint_id == "fer-emotion"
    assert create.endpoint.display_name == "fer-emotion"
    assert dict(create.endpoint.labels) == {"app": "fer-pipeline", "team": "ml"}
    request = vertex.request("deploy_model")
    assert request.endpoint == f"{PARENT}/endpoints/fer-emotion"
    assert request.deployed_model.model == f"{FAMILY}@3"  # the alias pinned to its version
    assert request.deployed_model.display_name == "fer-emotion-v3"
    assert request.deployed_model.service_account == SA
    resources = request.deployed_model.dedicated_resources
    assert resources.machine_spec.machine_type == "n1-standard-2"
    assert (resources.min_replica_count, resources.max_replica_count) == (1, 1)
    assert dict(request.traffic_split) == {"0": 100}
    printed = json.loads(capsys.readouterr().out)
    assert printed["deployed_model_id"] == "999" and printed["model_version"] == f"{FAMILY}@3"


def test_challenger_gets_its_share_of_an_existing_endpoint(vertex, config):
    vertex.endpoints = [serving_endpoint({"111": "3"}, {"111": 100})]

    assert run(config, "deploy", "--version", "challenger", "--traffic", "10", "--machine-type", "n1-standard-4") == 0

    assert "create_endpoint" not in vertex.names()
    request = vertex.request("deploy_model")
    assert request.endpoint == f"{PARENT}/endpoints/fer-emotion"
    assert request.deployed_model.model == f"{FAMILY}@4"
    assert request.deployed_model.dedicated_resources.machine_spec.machine_type == "n1-standard-4"
    assert dict(request.traffic_split) == {"0": 10, "111": 90}


def test_dry_run_prints_the_requests_and_sends_nothing(vertex, config, capsys):
    vertex.endpoints = [serving_endpoint({"111": "3"}, {"111": 100})]

    assert run(config, "deploy", "--version", "4", "--traffic", "25", "--dry-run") == 0

    assert vertex.names() == ["list_models", "get_model", "list_endpoints"]  # lookups only
    printed = json.loads(capsys.readouterr().out)
    assert printed["create_endpoint"] is None
    assert printed["model_version"] == f"{FAMILY}@4"
    assert printed["deploy_model"] == {
        "endpoint": f"{PARENT}/endpoints/fer-emotion",
        "deployed_model": {
            "model": f"{FAMILY}@4",
            "display_name": "fer-emotion-v4",
            "dedicated_resources": {
                "machine_spec": {"machine_type": "n1-standard-2"},
                "min_replica_count": 1,
                "max_replica_count": 1,
            },
            "service_account": SA,
        },
        "traffic_split": {"0": 25, "111": 75},
    }


def test_dry_run_for_a_new_endpoint_prints_its_creation(vertex, config, capsys):
    assert run(config, "deploy", "--endpoint", "FER Emotion", "--dry-run") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["create_endpoint"]["endpoint"]["display_name"] == "FER Emotion"
    assert "endpoint_id" not in printed["create_endpoint"]  # not a valid id: Vertex names it
    assert printed["deploy_model"]["endpoint"] == "<the endpoint create_endpoint makes>"
    assert "create_endpoint" not in vertex.names()


def test_an_endpoint_named_by_resource_name_is_read_not_searched(vertex, config, capsys):
    vertex.endpoints = [serving_endpoint({"111": "3"}, {"111": 100})]
    name = f"{PARENT}/endpoints/fer-emotion"
    assert run(config, "deploy", "--endpoint", name, "--version", "challenger", "--traffic", "50") == 0
    assert vertex.names() == ["list_models", "get_model", "get_endpoint", "deploy_model"]
    assert dict(vertex.request("deploy_model").traffic_split) == {"0": 50, "111": 50}
    assert run(config, "deploy", "--endpoint", f"{PARENT}/endpoints/404") == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_version_already_deployed_is_not_deployed_twice(vertex, config, capsys):
    vertex.endpoints = [serving_endpoint({"111": "3"}, {"111": 100})]
    assert run(config, "deploy") == 1
    err = capsys.readouterr().err
    assert "already deployed" in err and "deployed model 111" in err and "nothing sent" in err
    assert "deploy_model" not in vertex.names()


def test_an_unknown_version_names_the_aliases(vertex, config, capsys):
    assert run(config, "deploy", "--version", "golden") == 1
    assert "has no version 'golden'" in capsys.readouterr().err
    assert "deploy_model" not in vertex.names()


def test_a_dry_run_without_credentials_says_how_to_log_in(vertex, config, capsys, monkeypatch):
    from google.auth import exceptions as auth_exceptions

    def no_credentials(*args, **kwargs):
        raise auth_exceptions.DefaultCredentialsError("none found")

    monkeypatch.setattr("google.auth.default", no_credentials)
    assert deploy_cli.main(["deploy", "--config", str(config), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gcloud auth application-default login" in err
    assert vertex.calls == []


def test_traffic_split_keeps_the_others_proportions_and_sums_to_100():
    assert traffic_split({}, 100) == {"0": 100}
    assert traffic_split({"a": 50, "b": 50}, 15) == {"0": 15, "a": 43, "b": 42}
    assert traffic_split({"a": 70, "b": 30, "c": 0}, 10) == {"0": 10, "a": 63, "b": 27}
    assert sum(traffic_split({"a": 1, "b": 1, "c": 1}, 1).values()) == 100
    with pytest.raises(FerError, match="serves none"):
        traffic_split({}, 10)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["deploy", "--traffic", "150"], "TRAFFIC=150 (--traffic): must be a whole number from 1 to 100"),
        (["deploy", "--traffic", "ten"], "TRAFFIC=ten (--traffic)"),
        (["deploy", "--min-replicas", "2", "--max-replicas", "1"], "MAX_REPLICAS=1 (--max-replicas): must be at least"),
        (["deploy", "--machine-type", "N1 standard"], "MACHINE_TYPE=N1 standard (--machine-type)"),
        (["deploy", "--version", "Champion!"], "MODEL_VERSION=Champion! (--version)"),
        (["deploy", "--endpoint", " "], "ENDPOINT='' (--endpoint)"),
        (["batch-predict"], "INPUT='' (--input)"),
        (["batch-predict", "--input", "/tmp/photos/"], "INPUT=/tmp/photos/ (--input): must be a gs:// folder"),
        (["batch-predict", "--input", "gs://"], "INPUT=gs:// (--input): must be a gs:// folder"),
        (["batch-predict", "--input", "gs://b/p/", "--output", "gs://"], "OUTPUT=gs:// (--output)"),
    ],
)
def test_bad_options_are_one_line_naming_the_option_and_nothing_is_sent(vertex, config, capsys, argv, named):
    assert run(config, *argv) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1
    assert vertex.calls == []


def test_missing_project_and_output_are_named(vertex, tmp_path, capsys):
    bare = tmp_path / "bare.env"
    bare.write_text(f"REGION={REGION}\n")
    assert run(bare, "deploy") == 2
    assert capsys.readouterr().err.startswith("PROJECT not set: set PROJECT in")
    bare.write_text(f"PROJECT={PROJECT}\nREGION={REGION}\n")
    assert run(bare, "batch-predict", "--input", "gs://b/photos/") == 2
    assert "OUTPUT='' (--output): a gs:// prefix" in capsys.readouterr().err
    assert vertex.calls == []


# ------------------------------------------------------------------ batch prediction
@pytest.fixture()
def bucket(monkeypatch):
    """Cloud Storage as a dict: objects to read, and what was uploaded."""
    objects = {
        "gs://b/photos/a.jpg": b"jpeg-a",
        "gs://b/photos/sub/b.PNG": b"png-b",
        "gs://b/photos/notes.txt": b"not an image",
    }
    uploaded: dict[str, bytes] = {}

    def list_objects(uri):
        prefix = uri.rstrip("/") + "/"
        return {name[len(prefix) :]: "" for name in objects if name.startswith(prefix)}

    def download_file(uri, local):
        Path(local).write_bytes(objects[uri])
        return Path(local)

    monkeypatch.setattr(storage, "list_objects", list_objects)
    monkeypatch.setattr(storage, "download_file", download_file)
    monkeypatch.setattr(storage, "upload_file", lambda local, uri: uploaded.__setitem__(uri, Path(local).read_bytes()))
    return uploaded


def test_batch_prediction_of_a_folder_stages_keyed_instances(vertex, config, bucket, capsys):
    assert run(config, "batch-predict", "--input", "gs://b/photos/", "--output", "gs://b/out/run1") == 0

    assert bucket.keys() == {"gs://b/out/run1/instances.jsonl"}
    lines = [json.loads(line) for line in bucket["gs://b/out/run1/instances.jsonl"].decode().splitlines()]
    assert [line["key"] for line in lines] == ["gs://b/photos/a.jpg", "gs://b/photos/sub/b.PNG"]
    assert base64.b64decode(lines[1]["image_bytes"]["b64"]) == b"png-b"
    assert all(set(line) == {"key", "image_bytes"} for line in lines)

    job = vertex.request("create_batch_prediction_job").batch_prediction_job
    assert vertex.request("create_batch_prediction_job").parent == PARENT
    assert job.model == f"{FAMILY}@3"
    assert job.display_name.startswith("fer-emotion-batch-")
    assert job.input_config.instances_format == "jsonl"
    assert list(job.input_config.gcs_source.uris) == ["gs://b/out/run1/instances.jsonl"]
    assert (job.instance_config.instance_type, job.instance_config.key_field) == ("object", "key")
    assert job.output_config.predictions_format == "jsonl"
    assert job.output_config.gcs_destination.output_uri_prefix == "gs://b/out/run1/predictions"
    assert job.dedicated_resources.machine_spec.machine_type == "n1-standard-2"
    assert job.dedicated_resources.starting_replica_count == 1
    assert job.service_account == SA and dict(job.labels) == {"app": "fer-pipeline", "team": "ml"}
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "job": f"{PARENT}/batchPredictionJobs/77",
        "state": "JOB_STATE_PENDING",
        "predictions": "gs://b/out/run1/predictions",
    }


def test_batch_dry_run_from_a_uri_list_prints_the_job_and_stages_nothing(vertex, config, bucket, tmp_path, capsys):
    listed = tmp_path / "uris.jsonl"
    listed.write_text('"gs://b/photos/a.jpg"\n\n{"uri": "gs://b/photos/sub/b.PNG"}\n')

    assert run(config, "batch-predict", "--input", str(listed), "--version", "challenger", "--dry-run") == 0

    assert bucket == {} and vertex.names() == ["list_models", "get_model"]
    printed = json.loads(capsys.readouterr().out)
    prefix = printed["instances"]["uri"].removesuffix("/instances.jsonl")
    assert prefix.startswith(f"{PIPELINE_ROOT}/batch-predictions/fer-emotion-batch-")
    assert printed["instances"]["images"] == 2
    assert printed["instances"]["first"] == ["gs://b/photos/a.jpg", "gs://b/photos/sub/b.PNG"]
    assert printed["instances"]["line"]["image_bytes"] == {"b64": "<the image file, base64>"}
    job = printed["create_batch_prediction_job"]["batch_prediction_job"]
    assert printed["create_batch_prediction_job"]["parent"] == PARENT
    assert job["model"] == f"{FAMILY}@4"
    assert job["input_config"] == {"instances_format": "jsonl", "gcs_source": {"uris": [f"{prefix}/instances.jsonl"]}}
    assert job["instance_config"] == {"instance_type": "object", "key_field": "key"}
    assert job["output_config"]["gcs_destination"]["output_uri_prefix"] == f"{prefix}/predictions"


def test_an_empty_uri_list_is_refused_before_any_lookup(vertex, config, tmp_path, capsys):
    listed = tmp_path / "uris.jsonl"
    listed.write_text("\n")
    assert run(config, "batch-predict", "--input", str(listed)) == 1
    assert f"No lines in {listed}" in capsys.readouterr().err
    assert vertex.calls == []


def test_a_bad_uri_line_is_named_by_file_and_line(vertex, config, bucket, tmp_path, capsys):
    listed = tmp_path / "uris.jsonl"
    listed.write_text('"gs://b/photos/a.jpg"\n"/home/me/b.jpg"\n')
    assert run(config, "batch-predict", "--input", str(listed)) == 1
    assert f"{listed}:2: expected a gs:// image URI" in capsys.readouterr().err
    assert "create_batch_prediction_job" not in vertex.names() and bucket == {}


# ------------------------------------------------------------------ make
@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_targets_pass_the_options_and_dry_run():
    def make_n(*args: str) -> str:
        result = subprocess.run(
            ["make", "--no-print-directory", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=False
        )
        return result.stdout.splitlines()[-1]

    line = make_n("deploy", "DRY_RUN=1", "MODEL_VERSION=challenger", "TRAFFIC=10", "ENDPOINT=fer", "CONFIG=c.env")
    assert "-m pipelines.deploy deploy --config 'c.env'" in line
    assert all(flag in line for flag in ("--version 'challenger'", "--traffic '10'", "--endpoint 'fer'", "--dry-run"))
    line = make_n("batch-predict", "INPUT=gs://b/photos/", "OUTPUT=gs://b/out")
    assert "-m pipelines.deploy batch-predict" in line and "--input 'gs://b/photos/'" in line
    assert "--output 'gs://b/out'" in line and "--dry-run" not in line


def test_deploy_reads_settings_as_submit_does_unknown_keys_and_lists_named(tmp_path):
    config = tmp_path / "deploy.yaml"
    config.write_text("PROJECT: [a, b]\nREGION: europe-west4\nFOO: 1\n")
    with pytest.raises(deploy_cli.ConfigError) as refused:
        deploy_cli.read_settings(config, environ={})
    assert "FOO: unknown setting" in str(refused.value) and "PROJECT: expected text, got a list" in str(refused.value)
