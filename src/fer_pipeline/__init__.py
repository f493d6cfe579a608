"""FER-2013 facial-emotion classifier: the library behind the KFP pipeline and the CLI.

Nothing in this package imports KFP; cloud clients are confined to
``fer_pipeline.storage`` (Cloud Storage) and ``fer_pipeline.cloud`` (Vertex AI).
"""

__version__ = "0.1.0"
