"""The moderators' inbox: their decisions, appended as annotation-format lines for retraining.

Several moderators (processes, threads) write at once. Each decision is one line written
with a single ``write`` on a file opened for appending, under an exclusive ``flock``,
so lines are never torn or interleaved, and nothing is ever rewritten.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock

from model import paths
from model.data_format import Message
from model.labels import LABELS

DEFAULT_INBOX = Path(paths.INBOX)


def decision_record(
    message: Message,
    label: str,
    moderator: str,
    model_version: str,
    model_label: str,
    model_probabilities: dict[str, float],
    decided_at: datetime | None = None,
    queue_reason: str | None = None,
) -> dict:
    """A moderator's ruling in the annotation format, with who decided, when, what the model said and, for a message
    taken from the review queue, why the queue offered it (``training.review_queue``)."""
    if label not in LABELS:
        raise ValueError(f"label {label!r} is not one of {', '.join(LABELS)}")
    if not moderator.strip():
        raise ValueError("moderator name is empty")
    record = message.to_json()
    record.update(
        id=message.id or f"inbox-{uuid.uuid4().hex[:12]}",
        label=label,
        source="moderator",
        moderator=moderator,
        decided_at=(decided_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        model_version=model_version,
        model_label=model_label,
        model_probabilities=model_probabilities,
        agrees_with_model=label == model_label,
    )
    if queue_reason:
        record["queue_reason"] = queue_reason
    return record


def append_decision(record: dict, inbox: str | os.PathLike = DEFAULT_INBOX) -> Path:
    """Append one decision to today's file in ``inbox`` (``YYYY-MM-DD.jsonl``); return the file."""
    folder = Path(inbox)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{datetime.now(UTC):%Y-%m-%d}.jsonl"
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    with FileLock(folder / ".lock"), open(path, "ab") as handle:  # the lock keeps each line whole beside other writers
        handle.write(line)
    return path
