"""`make run-containers` without a container engine: the task runner that replaces
kfp.local's (exit codes, missing outputs, clean-up, GPU requests), the image tags that
follow the build context, the engine choice, the run comparison, and the image
properties KFP's launchers need (non-root, writable /gcs /minio /s3). The container run
itself is exercised by .ci/run (`make run-containers COMPARE=1`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pipelines import container_images, run_containers
from pipelines.container_engine import Engine, EngineError, detect_engine
from pipelines.container_tasks import TaskContainers, executor_input, missing_outputs

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ a fake docker-py client
class FakeContainer:
    def __init__(self, exit_code: int, on_run=None):
        self.exit_code, self.removed, self.on_run = exit_code, False, on_run

    def logs(self, stream: bool, follow: bool):
        if self.on_run:
            self.on_run()
        yield b"hello from the task\n"

    def wait(self):
        return {"StatusCode": self.exit_code}

    def remove(self, force: bool):
        self.removed = True


class FakeClient:
    def __init__(self, exit_code=0, images=("reg/cpu:ctx-1",), on_run=None):
        import docker

        client = self

        class Images:
            def get(self, ref):
                if ref not in images:
                    raise docker.errors.ImageNotFound(ref)
                return type("Image", (), {"short_id": "sha256:abc123"})()

        class Containers:
            def run(self, **kwargs):
                client.run_kwargs = kwargs
                client.container = FakeContainer(exit_code, on_run)
                return client.container

        self.images, self.containers = Images(), Containers()


def task_command(tmp_path: Path, name: str = "split_and_weight") -> list[str]:
    spec = {
        "outputs": {
            "outputFile": str(tmp_path / "executor_output.json"),
            "artifacts": {
                "split": {"artifacts": [{"uri": str(tmp_path / "split"), "type": {"schemaTitle": "system.Dataset"}}]},
                "metrics": {
                    "artifacts": [{"uri": str(tmp_path / "metrics"), "type": {"schemaTitle": "system.Metrics"}}]
                },
            },
        }
    }
    return ["sh", "-c", "...", "--executor_input", json.dumps(spec), "--function_to_execute", name]


def write_outputs(tmp_path: Path):
    (tmp_path / "executor_output.json").write_text("{}")
    (tmp_path / "split").write_text("{}")


def test_a_task_that_exits_0_with_its_outputs_succeeds_and_its_container_is_removed(tmp_path, capsys):
    tasks = TaskContainers()
    client = FakeClient(exit_code=0, on_run=lambda: write_outputs(tmp_path))
    assert tasks.run_container(client, "reg/cpu:ctx-1", task_command(tmp_path), volumes={}) == 0
    assert client.container.removed
    assert "auto_remove" not in client.run_kwargs  # removed after its exit code was read
    assert tasks.runs[0].task == "split_and_weight" and tasks.runs[0].image_id == "abc123"
    assert "Task image: split_and_weight runs in reg/cpu:ctx-1 (abc123)" in capsys.readouterr().out


def test_a_task_that_exits_0_without_its_outputs_fails(tmp_path, capsys):
    """kubeflow/pipelines#13332: success reported for a container whose outputs never landed."""
    tasks = TaskContainers()
    (tmp_path / "executor_output.json").write_text("{}")  # the Dataset artifact is missing
    assert tasks.run_container(FakeClient(exit_code=0), "reg/cpu:ctx-1", task_command(tmp_path), volumes={}) == 1
    assert tasks.runs[0].missing_outputs == (f"artifact split ({tmp_path / 'split'})",)
    assert "did not write" in capsys.readouterr().out


def test_the_exit_code_of_a_failed_task_is_passed_on_and_its_container_removed(tmp_path):
    client = FakeClient(exit_code=3)
    assert TaskContainers().run_container(client, "reg/cpu:ctx-1", task_command(tmp_path), volumes={}) == 3
    assert client.container.removed


def test_a_missing_image_fails_the_task_without_pulling(tmp_path, capsys):
    assert (
        TaskContainers().run_container(FakeClient(images=()), "reg/cpu:ctx-9", task_command(tmp_path), volumes={})
        == 125
    )
    assert "not in the local engine" in capsys.readouterr().out


def test_extra_volumes_and_gpu_requests_reach_the_container(tmp_path):
    write_outputs(tmp_path)
    tasks = TaskContainers(
        extra_volumes={"/data/x.zip": {"bind": "/data/x.zip", "mode": "ro"}}, gpu_images=frozenset({"reg/gpu:ctx-2"})
    )
    root = {"/root": {"bind": "/root", "mode": "rw"}}
    client = FakeClient(images=("reg/cpu:ctx-1", "reg/gpu:ctx-2"))
    tasks.run_container(client, "reg/gpu:ctx-2", task_command(tmp_path), volumes=root)
    assert set(client.run_kwargs["volumes"]) == {"/root", "/data/x.zip"}
    assert client.run_kwargs["device_requests"][0]["Capabilities"] == [["gpu"]]
    tasks.run_container(client, "reg/cpu:ctx-1", task_command(tmp_path), volumes=root)
    assert "device_requests" not in client.run_kwargs


def test_installed_replaces_kfps_container_start_and_restores_it():
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    tasks = TaskContainers()
    with tasks.installed():
        assert docker_task_handler.run_docker_container == tasks.run_container
    assert docker_task_handler.run_docker_container is original


def test_executor_input_and_missing_outputs_read_the_command(tmp_path):
    command = task_command(tmp_path)
    assert set(executor_input(command)["outputs"]["artifacts"]) == {"split", "metrics"}
    assert executor_input(["python", "x.py"]) == {}
    assert len(missing_outputs(executor_input(command))) == 2  # executor output + split; metrics are metadata
    write_outputs(tmp_path)
    assert missing_outputs(executor_input(command)) == []


# ------------------------------------------------------------------ images and engine
def copy_context(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for rel in (".dockerignore", "containers", "pyproject.toml", "requirements.lock", "README.md", "src"):
        source = ROOT / rel
        (shutil.copytree if source.is_dir() else shutil.copy2)(
            source, root / rel, **({"ignore": shutil.ignore_patterns("__pycache__")} if source.is_dir() else {})
        )
    return root


def test_image_tags_change_with_the_build_context_and_nothing_else(tmp_path):
    root = copy_context(tmp_path)
    first = container_images.context_digest("cpu", "base:1", root)
    assert first == container_images.context_digest("cpu", "base:1", root)
    (root / "docs").mkdir()
    (root / "docs" / "new.md").write_text("not in the image")
    (root / "src" / "fer_pipeline" / "__pycache__").mkdir(exist_ok=True)
    (root / "src" / "fer_pipeline" / "__pycache__" / "x.pyc").write_bytes(b"\0")  # .dockerignore excludes it
    (root / "src" / "fer_pipeline.egg-info").mkdir(exist_ok=True)
    (root / "src" / "fer_pipeline.egg-info" / "PKG-INFO").write_text("differs per checkout")  # and this
    assert container_images.context_digest("cpu", "base:1", root) == first
    assert container_images.context_digest("gpu", "base:1", root) != first
    assert container_images.context_digest("cpu", "base:2", root) != first
    (root / "src" / "fer_pipeline" / "classes.py").write_text("# changed\n", encoding="utf-8")
    assert container_images.context_digest("cpu", "base:1", root) != first


def test_build_context_files_follow_dockerignore():
    files = {str(p.relative_to(ROOT)) for p in container_images.build_context_files()}
    assert {
        "containers/install.sh",
        "containers/Dockerfile",
        "pyproject.toml",
        "requirements.lock",
        "src/fer_pipeline/steps.py",
    } <= files
    assert not [f for f in files if "__pycache__" in f or f.startswith(("tests/", "docs/", "pipelines/"))]


@pytest.mark.parametrize(
    "pattern, path, excluded",
    [
        ("src/**/*.egg-info", "src/fer_pipeline.egg-info/PKG-INFO", True),  # ** may be no folder at all
        ("src/**/*.egg-info", "src/a/b/c.egg-info", True),
        ("src/**/__pycache__", "src/fer_pipeline/__pycache__/x.pyc", True),
        ("src/**/*.pyc", "src/fer_pipeline/model.py", False),
        ("*.md", "docs/x.md", False),  # * stays within one name
        ("docs", "docs/x.md", True),  # a folder takes its contents
    ],
)
def test_dockerignore_patterns_match_as_docker_reads_them(pattern, path, excluded):
    assert bool(container_images.ignore_regex(pattern).match(path)) is excluded


def test_default_base_image_is_the_dockerfiles():
    assert container_images.default_base_image().startswith("python:3.11")


def path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only stand-ins for ``tools`` (each exits 0), for containers/engine.sh."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    return str(bin_dir)


def test_engine_choice_is_checked(monkeypatch, tmp_path):
    with pytest.raises(EngineError, match="ENGINE must be docker or podman, got lxc"):
        detect_engine("lxc")
    monkeypatch.setenv("PATH", path_with(tmp_path))  # neither docker nor podman
    with pytest.raises(EngineError, match="no container engine.*apt-get install podman runc"):
        detect_engine("")


def test_podman_gets_runc_cgroupfs_and_bounded_ulimits_from_engine_sh(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", path_with(tmp_path, "podman"))
    monkeypatch.delenv("PODMAN_OPTS", raising=False)
    monkeypatch.delenv("ENGINE", raising=False)
    engine = detect_engine("")
    assert engine.cli == ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in engine.run_args()["ulimits"]}
    assert ulimits == {"nofile": (1024, 1024), "nproc": (1024, 1024)}
    assert engine.run_flags() == ["--ulimit=nofile=1024:1024", "--ulimit=nproc=1024:1024"]
    monkeypatch.setenv("PODMAN_OPTS", "--runtime crun")
    assert detect_engine("").cli == ("podman", "--runtime", "crun")
    assert Engine("docker", ("docker",)).run_args() == {}


def test_training_image_follows_the_gpu():
    assert run_containers.choose_training_image("auto", has_gpu=False) == "cpu"
    assert run_containers.choose_training_image("auto", has_gpu=True) == "gpu"
    assert run_containers.choose_training_image("gpu", has_gpu=False) == "gpu"
    with pytest.raises(EngineError, match=r"--train-image \(TRAIN_IMAGE=\) must be one of auto, cpu, gpu, got .tpu."):
        run_containers.choose_training_image("tpu", has_gpu=False)


def test_run_containers_takes_run_locals_options_and_its_own_in_one_parser(tmp_path, capsys):
    run, own = run_containers.parse_args(
        ["--data", "fer.zip", "--epochs", "3", "--train-image", "cpu", "--compare", "--local-dir", str(tmp_path)]
    )
    assert (run.data, run.frozen_epochs, own.train_image, own.compare) == ("fer.zip", 3, "cpu", True)
    with pytest.raises(SystemExit):
        run_containers.parse_args(["--help"])
    shown = capsys.readouterr().out
    assert all(option in shown for option in ("--train-image", "--compare", "--engine", "--data", "--preset"))
    with pytest.raises(SystemExit) as refused:
        run_containers.parse_args(["--epoch", "3x"])
    assert refused.value.code == 2


def test_a_missing_data_file_is_refused_before_any_image_is_built(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_containers, "prepare", lambda *a: pytest.fail("prepare must not run"))
    with pytest.raises(SystemExit) as refused:
        run_containers.main(["--data", str(tmp_path / "nope.zip"), "--local-dir", str(tmp_path / "local")])
    assert refused.value.code == 2 and "nope.zip does not exist" in capsys.readouterr().err
    assert not (tmp_path / "local").exists()
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SystemExit) as refused:
        run_containers.main(["--data", str(damaged), "--local-dir", str(tmp_path / "local")])
    err = capsys.readouterr().err
    assert refused.value.code == 1, err  # unusable data, refused before the ingest task and its retries
    assert f"DATA={damaged}: {damaged} is not a readable zip file" in err
    assert not (tmp_path / "local").exists()


# ------------------------------------------------------------------ same answer in and out
def fake_run(root: Path, name: str, accuracy: float, split_seed: int = 12) -> Path:
    run = root / name
    (run / "ingest").mkdir(parents=True)
    (run / "split-and-weight").mkdir()
    (run / "evaluate" / "evaluation").mkdir(parents=True)
    (run / "ingest" / "dataset").write_text(
        json.dumps({"uri": "gs://b/d/1", "manifest": {"source_sha256": "ab", "counts": {"train": 3}}})
    )
    (run / "split-and-weight" / "split").write_text(json.dumps({"seed": split_seed, "train_counts": {"happy": 2}}))
    metrics = {"accuracy": accuracy, "per_class": {"happy": {"f1": accuracy}}, "confusion_matrix": [[1, 0], [0, 1]]}
    (run / "evaluate" / "evaluation" / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_runs_agree_to_float_tolerance_and_differences_are_named(tmp_path):
    a = fake_run(tmp_path, "a", 0.5)
    assert run_containers.compare_runs(a, fake_run(tmp_path, "b", 0.5 + 1e-9))[0]
    agree, message = run_containers.compare_runs(a, fake_run(tmp_path, "c", 0.51))
    assert not agree and "metrics.json accuracy: 0.5 vs 0.51" in message and "per_class.happy.f1" in message
    agree, message = run_containers.compare_runs(a, fake_run(tmp_path, "d", 0.5, split_seed=13))
    assert not agree and "split differs" in message


def test_the_latest_subprocess_run_with_the_same_parameters_is_the_peer(tmp_path):
    from fer_pipeline import runs

    root = tmp_path / "pipeline-root"
    index = runs.RunIndex(tmp_path / runs.INDEX_FILE)
    same, other = {"data_source": "/d.zip", "seed": 12}, {"data_source": "/d.zip", "seed": 13}
    for run_id, kind, params in (
        ("old", "kfp-local", same),
        ("new", "kfp-local", same),
        ("odd", "kfp-local", other),
        ("mine", "kfp-containers", same),
    ):
        index.append({"run_id": run_id, "kind": kind, "params": params})
    assert run_containers.latest_subprocess_run(tmp_path, root / "mine") == root / "new"
    index.append({"run_id": "lonely", "kind": "kfp-containers", "params": {"seed": 99}})
    assert run_containers.latest_subprocess_run(tmp_path, root / "lonely") is None


def test_pipeline_root_and_registry_are_made_writable_for_the_images_user(tmp_path):
    registry = tmp_path / "registry"
    (registry / "fer-emotion").mkdir(parents=True)
    (registry / "fer-emotion").chmod(0o755)
    (registry / "index.json").write_text("{}")
    (registry / "index.json").chmod(0o644)
    (registry / ".lock").write_text("")
    (registry / ".lock").chmod(0o644)
    run_containers.writable_by_any_user(tmp_path / "pipeline-root", registry)
    assert (tmp_path / "pipeline-root").stat().st_mode & 0o777 == 0o777
    assert (registry / "fer-emotion").stat().st_mode & 0o777 == 0o777
    assert (registry / ".lock").stat().st_mode & 0o777 == 0o666
    assert (registry / "index.json").stat().st_mode & 0o777 == 0o644  # replaced atomically, never opened for writing


# ------------------------------------------------------------------ what the images must do for KFP
def test_images_precreate_kfps_launcher_paths_for_the_non_root_user():
    """kubeflow/community-distribution#2573: a non-root launcher cannot create /gcs, /minio, /s3."""
    script = (ROOT / "containers" / "install.sh").read_text()
    paths = set(script.split('launcher_paths="', 1)[1].split('"', 1)[0].split())
    assert paths == {"/gcs", "/minio", "/s3"}
    setup = script.split("\nsetup)", 1)[1].split(";;", 1)[0]
    assert "mkdir -p $launcher_paths" in setup and "chown 10001:10001 $launcher_paths" in setup
    assert "useradd --uid 10001" in setup
    dockerfile = (ROOT / "containers" / "Dockerfile").read_text()
    for stage in ("cpu", "gpu"):
        body = dockerfile.split(f"AS {stage}", 1)[1].split("\nFROM ", 1)[0]
        assert f"install.sh setup {stage}" in body and "USER 10001:10001" in body


# ------------------------------------------------------------------ what run-local shares with it
def test_remote_sources_pass_through_and_missing_files_are_refused(tmp_path, capsys):
    from pipelines import run_local

    for source in ("kaggle:msambare/fer2013", "gs://bucket/fer2013.zip"):
        run = run_local.parse_args(["--data", source, "--local-dir", str(tmp_path)])
        assert run_local.data_source(run) == source
    with pytest.raises(SystemExit):
        run_local.check_data(run_local.parse_args(["--data", "missing.csv", "--local-dir", str(tmp_path)]))
    assert re.search(r"DATA=missing.csv does not exist; .*kaggle:msambare/fer2013", capsys.readouterr().err)


def test_a_failed_run_names_the_tasks_last_error(tmp_path):
    from pipelines import run_local

    log = tmp_path / "run.log"
    log.write_text(
        "Traceback (most recent call last):\n  File x\nValueError: first\n  more\n"
        "    fer_pipeline.errors.FerError: Could not download kaggle:x/y (offline). Set KAGGLE_USERNAME\n"
        "\x1b[91mFAILURE\x1b[0m\n"
    )
    assert (
        run_local.last_error(log)
        == "fer_pipeline.errors.FerError: Could not download kaggle:x/y (offline). Set KAGGLE_USERNAME"
    )
    assert run_local.last_error(tmp_path / "absent.log") == ""


@pytest.mark.parametrize(
    "stdout, error",
    [
        ("10001\n", None),
        ("0\n", "runs as root"),
        ("10001\nnot writable: /minio\n", "cannot write KFP's launcher paths .*/minio"),
    ],
)
def test_each_image_is_started_once_to_check_its_user_and_launcher_paths(monkeypatch, stdout, error):
    seen = {}

    def fake_run(command, **kwargs):
        seen["command"] = command
        return container_images.subprocess.CompletedProcess(command, 0, stdout, "")

    monkeypatch.setattr(container_images.subprocess, "run", fake_run)
    engine = Engine("podman", ("podman",), {"nofile": 1024})
    if error:
        with pytest.raises(EngineError, match=error):
            container_images.check_user_and_paths(engine, "reg/cpu:ctx-1")
    else:
        assert (
            container_images.check_user_and_paths(engine, "reg/cpu:ctx-1")
            == "runs as uid 10001, can write /gcs, /minio, /s3"
        )
    command = seen["command"]
    assert command[:6] == ["podman", "run", "--rm", "--network", "none", "--ulimit=nofile=1024:1024"]
    assert command[-3:] == ["/gcs", "/minio", "/s3"]


def test_only_older_contexts_of_the_same_image_are_removed(monkeypatch):
    listed = "\n".join(
        [
            "localhost/fer-pipeline/fer-pipeline-cpu:ctx-new",
            "localhost/fer-pipeline/fer-pipeline-cpu:ctx-old",
            "localhost/fer-pipeline/fer-pipeline-gpu:ctx-old",
            "localhost/fer-pipeline/fer-pipeline-cpu:abc123",
            "localhost/other/fer-pipeline-cpu:ctx-old",
        ]
    )
    removed = []

    def fake_run(command, **kwargs):
        if command[1] == "rmi":
            removed.append(command[2])
        return container_images.subprocess.CompletedProcess(command, 0, listed, "")

    monkeypatch.setattr(container_images.subprocess, "run", fake_run)
    engine = Engine("podman", ("podman",))
    assert container_images.remove_older_contexts(engine, "fer-pipeline/fer-pipeline-cpu:ctx-new") == [
        "localhost/fer-pipeline/fer-pipeline-cpu:ctx-old"
    ]
    assert removed == ["localhost/fer-pipeline/fer-pipeline-cpu:ctx-old"]
