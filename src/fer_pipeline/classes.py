"""The seven FER-2013 emotion classes and the two label codings in the wild."""

from collections.abc import Mapping
from typing import Any

# One fixed order for every label in this project: alphabetical, which is also the
# order Keras' `image_dataset_from_directory` gives the Kaggle folder layout.
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
NUM_CLASSES = len(CLASSES)
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}

# The original fer2013.csv codes its `emotion` column differently: 4=sad, 5=surprise, 6=neutral.
CSV_CODE_TO_CLASS: dict[int, str] = {
    0: "angry",
    1: "disgust",
    2: "fear",
    3: "happy",
    4: "sad",
    5: "surprise",
    6: "neutral",
}

IMAGE_SIZE = 48  # FER-2013 images are 48x48 8-bit grayscale


def averaged_classes_note(metrics: Mapping[str, Any], key: str) -> str:
    """ " (mean of 6 of 7 classes)" when a macro average left classes out, else ""; older
    metrics files, without the count, averaged all seven."""
    count = metrics.get(f"{key}_classes")
    return f" (mean of {count} of {NUM_CLASSES} classes)" if isinstance(count, int) and count < NUM_CLASSES else ""
