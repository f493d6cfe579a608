variable "project_id" {
  description = "GCP project that runs the pipeline."
  type        = string
}

variable "region" {
  description = "Region for Vertex AI, the bucket and Artifact Registry (one region keeps data and compute together)."
  type        = string
  default     = "europe-west4"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "fer-pipeline"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name))
    error_message = "name: 3-21 characters, lowercase letters, digits and '-', starting with a letter."
  }
}

variable "bucket_name" {
  description = "Pipeline-root bucket name (globally unique). Empty: PROJECT_ID-NAME."
  type        = string
  default     = ""
}

variable "docker_repository_id" {
  description = "Artifact Registry docker repository for the images. Empty: NAME."
  type        = string
  default     = ""
}

variable "kfp_repository_id" {
  description = "Artifact Registry KFP repository for compiled pipeline templates. Empty: NAME-templates."
  type        = string
  default     = ""
}

variable "immutable_tags" {
  description = "Refuse to overwrite an image tag in the docker repository (images are tagged by commit)."
  type        = bool
  default     = true
}

variable "artifact_retention_days" {
  description = "Delete pipeline-root objects older than this many days (0 keeps them)."
  type        = number
  default     = 90
}

variable "noncurrent_version_retention_days" {
  description = "Delete noncurrent (overwritten or deleted) object versions after this many days."
  type        = number
  default     = 30
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K, same region) for the bucket and the repositories (CMEK). Empty: Google-managed keys."
  type        = string
  default     = ""
}

variable "network" {
  description = "Optional VPC for Vertex AI Pipelines peering, projects/PROJECT_NUMBER/global/networks/NAME (private services access must exist). Only passed through to the outputs."
  type        = string
  default     = ""
}

variable "create_tensorboard" {
  description = "Create a Vertex AI TensorBoard instance for training curves."
  type        = bool
  default     = false
}

variable "submitters" {
  description = "Members that may submit runs as the pipeline service account (roles/iam.serviceAccountUser on it) and publish templates, e.g. [\"user:me@example.com\", \"group:ml@example.com\"]."
  type        = list(string)
  default     = []
}

variable "image_builders" {
  description = "Members that push images (roles/artifactregistry.writer on the docker repository), e.g. the Cloud Build service account."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Labels on every resource that takes them."
  type        = map(string)
  default = {
    app = "fer-pipeline"
  }
}
