# Optional Vertex AI TensorBoard for training curves (create_tensorboard = true).
resource "google_vertex_ai_tensorboard" "this" {
  count = var.create_tensorboard ? 1 : 0

  project      = var.project_id
  region       = var.region
  display_name = "${var.name}-tensorboard"
  description  = "fer-pipeline training curves"
  labels       = var.labels

  dynamic "encryption_spec" {
    for_each = var.kms_key_name != "" ? [var.kms_key_name] : []
    content {
      kms_key_name = encryption_spec.value
    }
  }

  depends_on = [google_project_service.apis]
}
