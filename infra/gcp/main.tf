locals {
  bucket_name          = var.bucket_name != "" ? var.bucket_name : "${var.project_id}-${var.name}"
  docker_repository_id = var.docker_repository_id != "" ? var.docker_repository_id : var.name
  kfp_repository_id    = var.kfp_repository_id != "" ? var.kfp_repository_id : "${var.name}-templates"

  # APIs the pipeline and its set-up call.
  services = toset([
    "aiplatform.googleapis.com",       # Vertex AI Pipelines, training, Model Registry, TensorBoard
    "artifactregistry.googleapis.com", # images and pipeline templates
    "storage.googleapis.com",          # pipeline root and data
    "cloudbuild.googleapis.com",       # cloudbuild.yaml (image builds without a local engine)
    "iam.googleapis.com",              # the pipeline service account
    "compute.googleapis.com",          # Vertex AI custom jobs (machines, optional VPC peering)
  ])
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "apis" {
  for_each = local.services

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
