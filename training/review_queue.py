"""Which scored messages a moderator should label first: the ones whose label would teach the model most.

A message earns its place by one of three reasons, recorded with it (and, once labelled, in the inbox):

- ``uncertain``: the model's top two labels are close (a small margin between their probabilities);
- ``keywords disagree``: a cheap keyword signal (a threat word beside money or a payment channel, read off the
  prepared text as :mod:`serve.evidence` reads it) says extortion where the model does not, or the reverse;
- ``random``: a share of uniform picks, so that figures computed from the labels stay unbiased.

Near-duplicates never sit next to each other: a message whose text is a near copy of one already queued is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from model.labels import LABELS
from model.text import prepare_text

from .splits import near_duplicate_pairs

THREAT_WORDS = ("差评", "中评", "一星", "追评", "投诉", "举报", "12315", "曝光", "工商", "市场监管", "后果自负", "看着办")
MONEY_WORDS = ("元", "块", "钱", "红包", "转账", "转我", "支付宝", "微信", "v我", "收款码", "补偿", "辛苦费", "诚意", "意思一下")


@dataclass
class QueueEntry:
    row: int
    reason: str
    value: float


def keyword_says_extortion(text: str) -> bool:
    """The cheap signal a keyword filter would give: a threat word and a money word in the same prepared text."""
    prepared = prepare_text(text)
    return any(w in prepared for w in THREAT_WORDS) and any(w in prepared for w in MONEY_WORDS)


def review_queue(texts: list[str], probs: np.ndarray, size: int, random_share: float = 0.2, seed: int = 0) -> list[QueueEntry]:
    """Up to ``size`` rows in the order to label them: by value (small margin, keyword disagreement), with a
    ``random_share`` of the places given to uniform random picks, and no near-duplicate of a message already queued."""
    if not 0.0 <= random_share <= 1.0:
        raise ValueError(f"random_share must be in [0, 1], got {random_share}")
    top_two = np.sort(probs, axis=1)[:, -2:]
    margin = top_two[:, 1] - top_two[:, 0]
    said_extortion = probs.argmax(axis=1) == LABELS.index("extortion")
    disagrees = np.array([keyword_says_extortion(t) != s for t, s in zip(texts, said_extortion, strict=True)], dtype=bool)
    value = (1.0 - margin) + disagrees  # a disagreement outranks any margin
    # Only a pool of the best and the random candidates is compared for near-duplicates, so a night's log stays cheap.
    pool_size = 10 * size
    by_value = [int(i) for i in np.argsort(-value, kind="stable")[:pool_size]]
    at_random = [int(i) for i in np.random.default_rng(seed).permutation(len(texts))[:pool_size]]
    pool = list(dict.fromkeys(by_value + at_random))
    near = {row: set() for row in pool}
    for i, j in near_duplicate_pairs([texts[row] for row in pool]).tolist():
        near[pool[i]].add(pool[j])
        near[pool[j]].add(pool[i])
    queue, taken = [], set()
    sources = {"random": iter(at_random), "value": iter(by_value)}
    while len(queue) < size:
        place = len(queue)
        kind = "random" if int((place + 1) * random_share) > int(place * random_share) else "value"
        row = next((r for r in sources[kind] if r not in taken and not near[r] & taken), None)
        if row is None:  # this source is spent: the other fills the place
            kind = "value" if kind == "random" else "random"
            row = next((r for r in sources[kind] if r not in taken and not near[r] & taken), None)
        if row is None:
            break
        taken.add(row)
        reason = "random" if kind == "random" else "keywords disagree" if disagrees[row] else "uncertain"
        queue.append(QueueEntry(row, reason, round(float(value[row]), 4)))
    return queue


def queue_records(predictions: Path, size: int, random_share: float = 0.2, seed: int = 0, context_turns: int = 4) -> list[dict]:
    """The queue over a batch job's ``predictions.parquet``: each message in the annotation format with its earlier turns,
    why it was queued and what the model said (what ``extortion-guard queue`` writes and the app's queue lists)."""
    columns = ["message_id", "conversation_id", "sender_role", "text", "label", "model_version", *(f"p_{label}" for label in LABELS)]
    table = pq.read_table(predictions, columns=columns)
    rows = table.to_pylist()
    probs = np.stack([table[f"p_{label}"].to_numpy(zero_copy_only=False) for label in LABELS], axis=1)
    entries = review_queue([r["text"] for r in rows], probs, size, random_share, seed)
    earlier = _earlier_turns(rows, {e.row for e in entries}, context_turns)
    records = []
    for entry in entries:
        row = rows[entry.row]
        record = {"id": row["message_id"], "text": row["text"], "context": earlier[entry.row], "role": row["sender_role"]}
        record |= {"conversation_id": row["conversation_id"], "queue_reason": entry.reason, "queue_value": entry.value}
        record |= {"model_label": row["label"], "model_probabilities": {label: round(float(row[f"p_{label}"]), 6) for label in LABELS}}
        record["model_version"] = row["model_version"]
        records.append(record)
    return records


def _earlier_turns(rows: list[dict], wanted: set[int], turns: int) -> dict[int, list[dict]]:
    """For each wanted row, the turns before it in its conversation (input order), as context."""
    by_conversation: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if row["conversation_id"] is not None:
            by_conversation.setdefault(row["conversation_id"], []).append(i)
    earlier = {}
    for i in wanted:
        thread = by_conversation.get(rows[i]["conversation_id"], [])
        before = thread[: thread.index(i)][-turns:] if i in thread else []
        earlier[i] = [{"role": rows[j]["sender_role"] or "buyer", "text": rows[j]["text"]} for j in before]
    return earlier
