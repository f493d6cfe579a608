# Pipeline root: every run's artifacts (datasets, models, metrics) under gs://BUCKET/pipeline-root.
resource "google_storage_bucket" "pipeline_root" {
  name     = local.bucket_name
  project  = var.project_id
  location = upper(var.region)

  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  # Overwritten or deleted objects are kept for a while, then removed.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # Old run artifacts expire (registered models live in the Model Registry).
  dynamic "lifecycle_rule" {
    for_each = var.artifact_retention_days > 0 ? [1] : []
    content {
      condition {
        age            = var.artifact_retention_days
        matches_prefix = ["pipeline-root/"]
        with_state     = "LIVE"
      }
      action {
        type = "Delete"
      }
    }
  }

  # What an interrupted ingest staged (fer_pipeline.storage.publish_dir) and no rerun
  # removed: never read, deleted after a day. Matches the default data_prefix output.
  lifecycle_rule {
    condition {
      age            = 1
      matches_prefix = ["data/datasets/_staging/"]
    }
    action {
      type = "Delete"
    }
  }

  # Unfinished multipart uploads are cleaned up.
  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name != "" ? [var.kms_key_name] : []
    content {
      default_kms_key_name = encryption.value
    }
  }

  labels = var.labels

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.storage_agent]
}

# CMEK: Cloud Storage's service agent must be able to use the key.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

resource "google_kms_crypto_key_iam_member" "storage_agent" {
  count = var.kms_key_name != "" ? 1 : 0

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}
