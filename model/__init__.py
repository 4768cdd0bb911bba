"""Everything inference needs: labels, the message format, input encoding and the classifier."""

from .classifier import ExtortionClassifier, Prediction
from .data_format import InvalidDataError, Message, Turn, read_messages
from .labels import LABELS

__all__ = ["ExtortionClassifier", "InvalidDataError", "LABELS", "Message", "Prediction", "Turn", "read_messages"]
