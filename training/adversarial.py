"""Adversarial rounds (build it, break it, fix it): keep a round's verified messages, freeze a share, train on the rest.

Writers see the current model's verdicts and write messages it gets wrong, plus some it gets right; a second
reader labels every message blind, and only the messages both gave the same label reach this module. The
round keeps every model error and at most as many messages the model got right, then freezes
``frozen_share`` of the conversations (by a stable hash) as ``data/annotations/eval/adversarial-rN.jsonl``:
never trained on, it measures the next models against the one the round was written against. The rest
joins the corpus (``data/annotations/messages/adv-rN.jsonl``), where the usual grouping puts it in train or dev.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from model.data_format import Message

from .splits import conversation_of


@dataclass
class Round:
    frozen: list[Message]
    train: list[Message]
    errors: int
    correct_kept: int
    correct_dropped: int


def _bucket(key: str) -> float:
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 10_000 / 10_000


def split_round(messages: Sequence[Message], predicted: Sequence[str], name: str, frozen_share: float = 0.2) -> Round:
    """Keep every error and as many correct messages (chosen by a stable hash), then freeze ``frozen_share`` by conversation.

    Each kept message gets a ``model:<label>`` tag: what the model the round was written against said.
    """
    if len(messages) != len(predicted):
        raise ValueError(f"{len(messages)} messages but {len(predicted)} predictions")
    errors = [(m, p) for m, p in zip(messages, predicted, strict=True) if p != m.label]
    correct = sorted(
        ((m, p) for m, p in zip(messages, predicted, strict=True) if p == m.label), key=lambda mp: _bucket(f"{name}:keep:{mp[0].id}")
    )
    kept = errors + correct[: len(errors)]
    frozen, train = [], []
    for message, label in sorted(kept, key=lambda mp: mp[0].id):
        tagged = Message(
            message.text,
            message.context,
            message.id,
            message.role,
            message.label,
            message.source,
            (*[t for t in message.tags if not t.startswith("model:")], f"model:{label}"),
        )
        (frozen if _bucket(f"{name}:{conversation_of(message)}") < frozen_share else train).append(tagged)
    return Round(frozen, train, len(errors), min(len(correct), len(errors)), max(len(correct) - len(errors), 0))
