# Images: REGION-docker.pkg.dev/PROJECT/REPO/fer-pipeline-{cpu,gpu}:COMMIT
resource "google_artifact_registry_repository" "docker" {
  project       = var.project_id
  location      = var.region
  repository_id = local.docker_repository_id
  description   = "fer-pipeline images, tagged by commit"
  format        = "DOCKER"
  kms_key_name  = var.kms_key_name != "" ? var.kms_key_name : null

  docker_config {
    immutable_tags = var.immutable_tags
  }

  # Untagged images (superseded pushes) are removed after 30 days.
  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "2592000s"
    }
  }

  labels     = var.labels
  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.registry_agent]
}

# Compiled pipeline templates: https://REGION-kfp.pkg.dev/PROJECT/REPO
resource "google_artifact_registry_repository" "kfp" {
  project       = var.project_id
  location      = var.region
  repository_id = local.kfp_repository_id
  description   = "fer-pipeline compiled pipeline templates"
  format        = "KFP"
  kms_key_name  = var.kms_key_name != "" ? var.kms_key_name : null

  labels     = var.labels
  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.registry_agent]
}

resource "google_kms_crypto_key_iam_member" "registry_agent" {
  count = var.kms_key_name != "" ? 1 : 0

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
}
