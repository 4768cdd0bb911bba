"""Everything inference needs: labels, the message format, input encoding and the classifier.

The classifier (and with it torch and transformers) is imported on first use, so that light commands
(``data validate``, ``hash-password``) start fast.
"""

from .data_format import InvalidDataError, Message, Turn, read_messages
from .labels import LABELS

__all__ = ["LABELS", "ExtortionClassifier", "InvalidDataError", "Message", "Prediction", "Turn", "read_messages"]


def __getattr__(name: str):
    if name in ("ExtortionClassifier", "Prediction"):
        from . import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
