"""How tolerant an ingest is: ``IngestOptions`` (conversion, duplicate and leakage
policies, strictness, zip limits), checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass

from fer_pipeline.errors import ConfigError

DUPLICATE_POLICIES = ("keep", "drop", "fail")


@dataclass(frozen=True)
class IngestOptions:
    """How tolerant an ingest is.

    Attributes:
        convert: accept images that are not 48x48 grayscale JPEG/PNG by converting them
            (counted as "converted"); without it they are rejected.
        duplicate_policy: for groups of identical images with different labels: "keep",
            "drop" (remove every member) or "fail" (DatasetError).
        drop_leakage: drop train samples whose pixels are identical to a test sample.
        strict: any rejected file fails the ingest; False quarantines rejected files
            (listed in the report) and goes on without them.
        max_member_bytes: a zip entry that inflates to more than this is rejected
            before it is inflated (a FER-2013 image is about 2 KB; a camera JPEG a few MB).
        max_compression_ratio: a zip entry whose uncompressed size is more than this
            many times its compressed size is rejected unread (archive bombs reach
            1,000x and more; images barely compress).
    """

    convert: bool = False
    duplicate_policy: str = "keep"
    drop_leakage: bool = False
    strict: bool = True
    max_member_bytes: int = 64 * 2**20
    max_compression_ratio: float = 100.0

    def __post_init__(self) -> None:
        if self.duplicate_policy not in DUPLICATE_POLICIES:
            raise ConfigError(
                f"duplicate_policy must be one of {', '.join(DUPLICATE_POLICIES)}, got {self.duplicate_policy!r}."
            )
        if self.max_member_bytes <= 0 or self.max_compression_ratio <= 1:
            raise ConfigError(
                "max_member_bytes must be > 0 and max_compression_ratio > 1, "
                f"got {self.max_member_bytes!r} and {self.max_compression_ratio!r}."
            )
