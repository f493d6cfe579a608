# The identity pipeline runs use (SERVICE_ACCOUNT in config/submit.env), with only
# what the pipeline needs. docs/cloud.md explains every role below.
resource "google_service_account" "pipeline" {
  project      = var.project_id
  account_id   = "${var.name}-runner"
  display_name = "fer-pipeline: Vertex AI pipeline runs"
  description  = "Runs the fer-pipeline Vertex AI pipeline (managed by infra/gcp)."

  depends_on = [google_project_service.apis]
}

locals {
  pipeline_member = "serviceAccount:${google_service_account.pipeline.email}"

  # Project-level roles of the pipeline service account.
  pipeline_project_roles = toset([
    "roles/aiplatform.user",   # create the run's custom jobs, metadata, Model Registry uploads, TensorBoard writes
    "roles/logging.logWriter", # write the components' logs
  ])
}

resource "google_project_iam_member" "pipeline" {
  for_each = local.pipeline_project_roles

  project = var.project_id
  role    = each.value
  member  = local.pipeline_member
}

# Read and write run artifacts, on the pipeline-root bucket only.
resource "google_storage_bucket_iam_member" "pipeline_objects" {
  bucket = google_storage_bucket.pipeline_root.name
  role   = "roles/storage.objectAdmin"
  member = local.pipeline_member
}

# Read the bucket's metadata (location checks before writing artifacts), this bucket only.
resource "google_storage_bucket_iam_member" "pipeline_bucket_reader" {
  bucket = google_storage_bucket.pipeline_root.name
  role   = "roles/storage.legacyBucketReader"
  member = local.pipeline_member
}

# Pull the images, this repository only.
resource "google_artifact_registry_repository_iam_member" "pipeline_pull" {
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.docker.name
  role       = "roles/artifactregistry.reader"
  member     = local.pipeline_member
}

# Read templates from the KFP repository (a run started from a template URL).
resource "google_artifact_registry_repository_iam_member" "pipeline_templates" {
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.kfp.name
  role       = "roles/artifactregistry.reader"
  member     = local.pipeline_member
}

# The pipeline launches training jobs that run as itself: it must be allowed to act as itself.
resource "google_service_account_iam_member" "pipeline_self_user" {
  service_account_id = google_service_account.pipeline.name
  role               = "roles/iam.serviceAccountUser"
  member             = local.pipeline_member
}

# People (or CI) who submit runs as the pipeline service account.
resource "google_service_account_iam_member" "submitters" {
  for_each = toset(var.submitters)

  service_account_id = google_service_account.pipeline.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

# ... and publish compiled templates.
resource "google_artifact_registry_repository_iam_member" "submitters_templates" {
  for_each = toset(var.submitters)

  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.kfp.name
  role       = "roles/artifactregistry.writer"
  member     = each.value
}

# Whoever pushes images (a person, CI, or the Cloud Build service account).
resource "google_artifact_registry_repository_iam_member" "image_builders" {
  for_each = toset(var.image_builders)

  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.docker.name
  role       = "roles/artifactregistry.writer"
  member     = each.value
}
