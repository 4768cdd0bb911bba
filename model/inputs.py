"""Turning messages into model inputs, identically in training, evaluation and prediction.

Each text first goes through the model's text preparation (see :mod:`model.text`);
a model records which one it was trained with, and models from before it existed
use ``whitespace``. The message is the first segment and its context the second, so
that a message without context encodes like plain text (what ``transformers.pipeline``
feeds). Models trained with ``role_marker="seller"`` also see a seller's message behind
the seller marker: a seller's reply inside an extortion chat is not the buyer's demand.
Buyer messages and messages of unknown role stay unmarked (most messages, and most logs'
unknown senders, are buyers'). The message keeps its tokens up to the window, and is flagged when cut;
the context fills what is left and loses its oldest tokens first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .data_format import Message, Turn
from .text import prepare_text

ROLE_MARKERS = {"buyer": "买家:", "seller": "卖家:"}
ROLE_MARKER_CHOICES = ("none", "seller")  # which senders' messages carry their marker (recorded in a model's config)
_WHITESPACE = re.compile(r"\s+")


def collapse_whitespace(text: str) -> str:
    """Whitespace runs (newlines, tabs) become one space."""
    return _WHITESPACE.sub(" ", text).strip()


# Name recorded in a model's config -> the function its inputs went through.
PREPARATIONS: dict[str, Callable[[str], str]] = {"whitespace": collapse_whitespace, "evasion-v1": prepare_text}


def preparation(name: str) -> Callable[[str], str]:
    if name not in PREPARATIONS:
        raise ValueError(f"unknown text preparation {name!r}; known: {sorted(PREPARATIONS)}")
    return PREPARATIONS[name]


def format_context(turns: Sequence[Turn], prepare: Callable[[str], str] = collapse_whitespace) -> str:
    """Context turns, oldest first, each behind its role marker (none where a chat log did not say the role)."""
    return " ".join(f"{ROLE_MARKERS.get(t.role, '')}{prepare(t.text)}" for t in turns)


@dataclass
class EncodedBatch:
    """Token ids per message (unpadded) and whether the message itself was cut."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    truncated: list[bool]

    def select(self, rows) -> EncodedBatch:
        """The messages at ``rows``, in that order."""
        return EncodedBatch([self.input_ids[i] for i in rows], [self.token_type_ids[i] for i in rows], [self.truncated[i] for i in rows])

    def padded(self, pad_id: int) -> dict[str, np.ndarray]:
        """Right-padded int64 arrays ``input_ids``, ``attention_mask``, ``token_type_ids``."""
        width = max(len(ids) for ids in self.input_ids)
        out = {name: np.zeros((len(self.input_ids), width), dtype=np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
        out["input_ids"].fill(pad_id)
        for row, (ids, types) in enumerate(zip(self.input_ids, self.token_type_ids, strict=True)):
            out["input_ids"][row, : len(ids)] = ids
            out["attention_mask"][row, : len(ids)] = 1
            out["token_type_ids"][row, : len(ids)] = types
        return out


def message_text(message: Message, prepare: Callable[[str], str], role_marker: str = "none") -> str:
    """The first segment: the prepared text (as written if preparation empties it), behind the seller marker where asked."""
    if role_marker not in ROLE_MARKER_CHOICES:
        raise ValueError(f"role_marker must be one of {ROLE_MARKER_CHOICES}, got {role_marker!r}")
    text = prepare(message.text) or message.text.strip()
    return ROLE_MARKERS["seller"] + text if role_marker == "seller" and message.role == "seller" else text


def encode_messages(
    tokenizer, messages: Sequence[Message], max_length: int, text_preparation: str = "whitespace", role_marker: str = "none"
) -> EncodedBatch:
    """Encode messages with their context through the fast tokenizer's Rust backend."""
    prepare = preparation(text_preparation)
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    # A message that preparation empties (only symbols) is kept as written rather than lost.
    texts = backend.encode_batch([message_text(m, prepare, role_marker) for m in messages], add_special_tokens=False)
    contexts = backend.encode_batch([format_context(m.context, prepare) for m in messages], add_special_tokens=False)
    single_extra = backend.num_special_tokens_to_add(False)
    pair_extra = backend.num_special_tokens_to_add(True)
    batch = EncodedBatch([], [], [])
    for message, text, context in zip(messages, texts, contexts, strict=True):
        cut = len(text.ids) > max_length - single_extra
        if cut:
            text.truncate(max_length - single_extra, direction="right")
        room = max_length - len(text.ids) - pair_extra
        if message.context and room > 0:
            if len(context.ids) > room:
                context.truncate(room, direction="left")
            encoding = backend.post_process(text, context, add_special_tokens=True)
        else:
            encoding = backend.post_process(text, None, add_special_tokens=True)
        batch.input_ids.append(encoding.ids)
        batch.token_type_ids.append(encoding.type_ids)
        batch.truncated.append(cut)
    return batch
