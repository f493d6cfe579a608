"""No credentials, tokens or keys in the repository's history, the built images, or the logs.

(tests/test_containers.py scans the files of the working tree with regexes and
detect-secrets.) Here:
- every commit of the git history, with the same key patterns (a key committed once and
  deleted later is still in the repository);
- the built images, where an engine and the images are present (skipped otherwise):
  no secret-named variables with values, no keys in the build history, no credential
  files anywhere in the file system, no keys in the home folders, /etc, /tmp and the
  installed fer_pipeline package;
- the output of pipeline steps run with fake credentials in their environment: the
  values never reach the logs or the written reports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fer_pipeline import synthetic

ROOT = Path(__file__).resolve().parents[1]
KEY_PATTERNS = [
    re.compile(r"-----BEGIN (RSA |EC |DSA |OPENSSH |ENCRYPTED |)PRIVATE KEY-----"),
    re.compile(r'"private_key_id"\s*:\s*"[0-9a-f]{20,}"'),  # a GCP service account key file
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
    re.compile(r"AIza[0-9A-Za-z_\-]{35}"),  # a Google API key
    re.compile(r"ya29\.[0-9A-Za-z_\-]{20,}"),  # a Google OAuth access token
    re.compile(r"1//0[0-9A-Za-z_\-]{40,}"),  # a Google OAuth refresh token
    re.compile(r"gh[pousr]_[0-9A-Za-z]{36}"),  # a GitHub token
    re.compile(r'"key"\s*:\s*"[0-9a-f]{32}"'),  # a kaggle.json
]
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSW(OR)?D|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)
CREDENTIAL_FILES = re.compile(
    r"(^|/)(application_default_credentials\.json|credentials\.db|access_tokens\.db|kaggle\.json|\.netrc|"
    r"\.git-credentials|id_rsa|id_ecdsa|id_ed25519|.*-[0-9a-f]{12}\.json|service[-_]account.*\.json|"
    r".*\.p12|.*\.pfx)$"
)


def key_hits(text: str) -> list[str]:
    return [pattern.pattern for pattern in KEY_PATTERNS if pattern.search(text)]


def test_the_patterns_catch_what_they_are_for():
    fake = "".join(["AKIA", "ABCDEFGHIJKLMNOP"])  # split so that the repository holds no match
    assert key_hits(f"aws = {fake}") and key_hits("-----BEGIN " + "PRIVATE KEY-----")
    assert key_hits('{"private_key_id": "' + "0123456789abcdef" * 2 + '"}')
    assert not key_hits("sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    assert CREDENTIAL_FILES.search("/home/fer/.config/gcloud/application_default_credentials.json")
    assert CREDENTIAL_FILES.search("/tmp/my-project-0123456789ab.json")  # gcloud's key file naming
    assert not CREDENTIAL_FILES.search("/opt/venv/lib/python3.11/site-packages/certifi/cacert.pem")


# ------------------------------------------------------------------ git history
def test_no_keys_in_any_commit():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    history = subprocess.run(
        ["git", "log", "--all", "-p", "--no-color", "--no-ext-diff"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode(errors="replace")
    added = "\n".join(line for line in history.splitlines() if line.startswith("+"))
    assert key_hits(added) == []


# ------------------------------------------------------------------ built images
def _engine() -> list[str] | None:
    """docker when its daemon answers, else podman with containers/engine.sh's options."""
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return ["docker"]
    if shutil.which("podman"):
        return ["podman", *os.environ.get("PODMAN_OPTS", "--runtime runc --cgroup-manager cgroupfs").split()]
    return None


def _run_options(engine: list[str]) -> list[str]:
    """Bounded ulimits for podman on hosts without cgroup delegation, as containers/engine.sh."""
    return ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"] if engine[0] == "podman" else []


def _images(engine: list[str]) -> list[str]:
    """FER_TEST_IMAGES, else the newest local fer-pipeline-cpu and -gpu images."""
    if os.environ.get("FER_TEST_IMAGES"):
        return os.environ["FER_TEST_IMAGES"].split()
    listed = subprocess.run(
        [*engine, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, timeout=60
    )
    found = []
    for suffix in ("fer-pipeline-cpu", "fer-pipeline-gpu"):
        names = [n for n in listed.stdout.split() if n.rsplit(":", 1)[0].endswith(suffix) and not n.endswith(":<none>")]
        found += names[:1]  # the engines list the newest first
    return found


IMAGE_SCAN = r"""
import json, os, re, sys
patterns = [re.compile(p) for p in json.loads(sys.argv[1])]
credential_files = re.compile(sys.argv[2])
hits = []
for top, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/dev")]
    for name in files:
        path = os.path.join(top, name)
        if credential_files.search(path) and "/site-packages/" not in path and "/share/" not in path:
            hits.append("credential file " + path)
import fer_pipeline
roots = ["/home", "/root", "/tmp", "/etc", os.path.dirname(fer_pipeline.__file__)]
for root in roots:
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(top, d) != "/etc/ssl"]
        for name in files:
            path = os.path.join(top, name)
            try:
                with open(path, "rb") as handle:
                    text = handle.read(2_000_000).decode("utf-8", "replace")
            except OSError:
                continue
            hits += [path + ": " + p.pattern for p in patterns if p.search(text)]
print(json.dumps(hits))
"""


@pytest.fixture(scope="module")
def built_images():
    engine = _engine()
    if engine is None:
        pytest.skip("no container engine (docker or podman)")
    images = _images(engine)
    if not images:
        pytest.skip("no built fer-pipeline images (make build); FER_TEST_IMAGES=... names others")
    return engine, images


def test_images_carry_no_secret_variables_or_keys_in_their_history(built_images):
    engine, images = built_images
    for image in images:
        inspected = json.loads(
            subprocess.run(
                [*engine, "image", "inspect", image], capture_output=True, text=True, check=True, timeout=60
            ).stdout
        )[0]
        config = inspected.get("Config") or {}
        for entry in config.get("Env") or []:
            name, _, value = entry.partition("=")
            assert not (SECRET_NAME.search(name) and value), f"{image}: ENV {name} has a value"
        history = subprocess.run(
            [*engine, "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        assert key_hits(history) == [], image
        assert key_hits(json.dumps(config.get("Labels") or {})) == [], image


def test_images_hold_no_credential_files_or_keys(built_images):
    engine, images = built_images
    for image in images:
        result = subprocess.run(
            [
                *engine,
                "run",
                "--rm",
                "--network",
                "none",
                "--user",
                "0",
                *_run_options(engine),
                "--entrypoint",
                "python",
                image,
                "-c",
                IMAGE_SCAN,
                json.dumps([p.pattern for p in KEY_PATTERNS]),
                CREDENTIAL_FILES.pattern,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads(result.stdout.strip().splitlines()[-1]) == [], image


# ------------------------------------------------------------------ logs
FAKE_KEY = "0123456789abcdef" * 2
# Built from parts, so that the repository's own secret scans (test_containers.py) see no literal.
FAKE_SECRETS = {
    "KAGGLE_USERNAME": "someone-secret-user",
    "KAGGLE_KEY": FAKE_KEY,
    "AWS_SECRET_ACCESS_KEY": "".join(["wJalrXUtnFEMI", "fake" * 3, "EXAMPLEKEY"]),
    "GOOGLE_OAUTH_ACCESS_TOKEN": "".join(["ya29.", "a0AfakeTokenValue" * 3]),
    "FER_TEST_PASSWORD": "-".join(["correct", "horse", "battery", "staple"]),
}


def test_step_logs_and_reports_never_show_credentials_from_the_environment(tmp_path):
    key_file = tmp_path / "sa-key.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "private_key_id": "ab" * 20,
                "private_key": "-----BEGIN " + "PRIVATE KEY-----\nMIIfake\n-----END PRIVATE KEY-----\n",
            }
        )
    )
    env = {**os.environ, **FAKE_SECRETS, "GOOGLE_APPLICATION_CREDENTIALS": str(key_file), "TF_CPP_MIN_LOG_LEVEL": "2"}
    source = synthetic.write_kaggle_zip(tmp_path / "fer2013.zip", n_train=3, n_test=2)
    cli = [sys.executable, "-m", "fer_pipeline.cli"]
    outputs = []
    for args in (
        ["validate", str(source), "--json", str(tmp_path / "report.json")],
        ["ingest", str(source), "--out", str(tmp_path / "dataset")],
        ["split", str(tmp_path / "dataset"), "--out", str(tmp_path / "split.json")],
        ["ingest", "gs://no-such-bucket/fer2013.zip", "--out", str(tmp_path / "gcs")],
    ):  # fails: auth
        result = subprocess.run(
            [*cli, *args], capture_output=True, text=True, env={**env, "FER_GCS_RETRY_DEADLINE": "1"}, timeout=120
        )
        outputs.append(result.stdout + result.stderr)
    assert "dataset usable" in outputs[0] and "error:" in outputs[3], outputs
    written = [p.read_text(errors="replace") for p in tmp_path.rglob("*.json") if p != key_file]
    for text in outputs + written:
        for value in FAKE_SECRETS.values():
            assert value not in text
        assert str(key_file.read_text()) not in text and "MIIfake" not in text
        assert key_hits(text) == []
