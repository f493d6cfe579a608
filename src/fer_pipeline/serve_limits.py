"""The bounds of ``fer-pipeline serve``, apart from the server so that the CLI can show
their defaults without importing FastAPI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may hold and how many requests may be in progress at once."""

    max_body_bytes: int = 8 * 2**20  # Vertex's online requests stop at 1.5 MB; photos for :detect are bigger
    max_instances: int = 64  # instances in one :predict request
    max_pixels: int = 50_000_000  # decoded pixels of one request, all its images together
    max_concurrent: int = 2  # requests using the model at once (TensorFlow already spreads one over the cores)
    max_queue: int = 16  # requests waiting for the model; beyond, 503 at once
    body_timeout_s: float = 30.0  # a client that sends its body slower than this gets a 408
