"""Labelled messages: reading, splitting into train/dev/test, and turning into ``datasets``."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

from datasets import Dataset

from model.data_format import Message, read_messages
from model.inputs import encode_messages
from model.labels import LABEL2ID, LABELS

SPLITS = ("train", "dev", "test")
# Percent of conversation groups per split; the hash decides, so a group never moves.
SPLIT_SHARES = {"train": 80, "dev": 10, "test": 10}


def group_of(message: Message) -> str:
    """Messages of one conversation share the id part before ``#`` and stay in one split."""
    return (message.id or message.text).split("#", 1)[0]


def split_of(message: Message) -> str:
    """``train``, ``dev`` or ``test``, from a stable hash of the message's group."""
    bucket = int(hashlib.sha1(group_of(message).encode("utf-8")).hexdigest(), 16) % 100
    if bucket < SPLIT_SHARES["train"]:
        return "train"
    return "dev" if bucket < SPLIT_SHARES["train"] + SPLIT_SHARES["dev"] else "test"


def load_splits(paths: Sequence[str]) -> dict[str, list[Message]]:
    """Read and validate labelled data (raising on any bad line), then split it by group."""
    splits = {name: [] for name in SPLITS}
    for message in read_messages(paths, require_label=True):
        splits[split_of(message)].append(message)
    return splits


def label_counts(messages: Sequence[Message]) -> dict[str, int]:
    counts = Counter(m.label for m in messages)
    return {label: counts.get(label, 0) for label in LABELS}


def to_dataset(messages: Sequence[Message], tokenizer, max_length: int) -> Dataset:
    """Tokenised ``datasets.Dataset`` with ``input_ids``, ``token_type_ids`` and ``labels``."""
    encoded = encode_messages(tokenizer, messages, max_length)
    columns = {"input_ids": encoded.input_ids, "labels": [LABEL2ID[m.label] for m in messages]}
    if "token_type_ids" in tokenizer.model_input_names:
        columns["token_type_ids"] = encoded.token_type_ids
    return Dataset.from_dict(columns)
