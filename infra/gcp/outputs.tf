# Read by `make infra-config` (python -m pipelines.settings from-terraform), which writes
# them into config/submit.env; or one at a time: terraform -chdir=infra/gcp output -raw NAME

output "project_id" {
  description = "PROJECT"
  value       = var.project_id
}

output "region" {
  description = "REGION"
  value       = var.region
}

output "bucket" {
  description = "Pipeline-root bucket name"
  value       = google_storage_bucket.pipeline_root.name
}

output "pipeline_root" {
  description = "PIPELINE_ROOT"
  value       = "gs://${google_storage_bucket.pipeline_root.name}/pipeline-root"
}

output "data_prefix" {
  description = "A gs:// prefix for the ingested dataset (PARAM_data_prefix)"
  value       = "gs://${google_storage_bucket.pipeline_root.name}/data"
}

output "service_account_email" {
  description = "SERVICE_ACCOUNT"
  value       = google_service_account.pipeline.email
}

output "docker_registry" {
  description = "REGISTRY: where make push puts the images"
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.docker.repository_id}"
}

output "kfp_repository_url" {
  description = "TEMPLATE_REPOSITORY: Artifact Registry KFP repository for make publish (kfp.registry.RegistryClient host)"
  value       = "https://${var.region}-kfp.pkg.dev/${var.project_id}/${google_artifact_registry_repository.kfp.repository_id}"
}

output "network" {
  description = "NETWORK (empty: no VPC peering)"
  value       = var.network
}

output "kms_key" {
  description = "ENCRYPTION_KEY (empty: Google-managed keys)"
  value       = var.kms_key_name
}

output "tensorboard" {
  description = "TENSORBOARD: Vertex AI TensorBoard for the training curves (empty when not created)"
  value       = var.create_tensorboard ? google_vertex_ai_tensorboard.this[0].name : ""
}
