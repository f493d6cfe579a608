terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "6.44.0"
    }
  }

  # State: local by default. For a team, keep it in a GCS bucket made beforehand:
  #   terraform init -backend-config="bucket=MY-TF-STATE" -backend-config="prefix=fer-pipeline"
  # after uncommenting:
  # backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = var.labels
}
