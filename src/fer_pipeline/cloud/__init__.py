"""Vertex AI integrations. The only package that imports ``google.cloud.aiplatform``.

Submodules are imported explicitly (``from fer_pipeline.cloud import vertex_registry``)
so that importing this package stays cheap and works without the ``pipeline`` extra.
"""
