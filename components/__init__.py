"""The six KFP components, one module each. Each body only turns artifacts into paths
and calls `fer_pipeline.steps`; `components.images` names the images they run in."""

from components.evaluate import evaluate
from components.fine_tune import fine_tune
from components.ingest import ingest
from components.register import register
from components.split import split_and_weight
from components.train_frozen import train_frozen

__all__ = ["ingest", "split_and_weight", "train_frozen", "fine_tune", "evaluate", "register"]
