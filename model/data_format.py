"""The message format shared by annotations, training data and prediction input.

JSON Lines, one message per line::

    {"id": str, "text": str, "context": [{"role": "buyer"|"seller", "text": str}, ...],
     "role": "buyer"|"seller", "label": one of LABELS, "source": str, "tags": [str]}

``context`` holds the preceding turns, oldest first. Only ``text`` is required for
prediction; training also needs ``id`` and ``label``. Every problem is reported as
``file:line: what is wrong`` and nothing is silently skipped.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .labels import LABELS, ROLES


@dataclass(frozen=True)
class Turn:
    """One earlier turn of the conversation."""

    role: str
    text: str


@dataclass(frozen=True)
class Message:
    """One message to classify, with the turns before it."""

    text: str
    context: tuple[Turn, ...] = ()
    id: str | None = None
    role: str | None = None
    label: str | None = None
    source: str | None = None
    tags: tuple[str, ...] = field(default=())

    def to_json(self) -> dict:
        out = {"id": self.id, "text": self.text, "context": [{"role": t.role, "text": t.text} for t in self.context]}
        for key in ("role", "label", "source"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.tags:
            out["tags"] = list(self.tags)
        return out


class InvalidDataError(ValueError):
    """Raised with every ``file:line: problem`` found in the input."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:50]
        more = f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__("\n".join(shown) + more)


def _check_text(value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} is empty or whitespace only")
    return value


def message_from_json(obj, require_label: bool = False) -> Message:
    """Build a :class:`Message` from a decoded JSON value; ``ValueError`` says what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "text" not in obj:
        raise ValueError("missing field 'text'")
    text = _check_text(obj["text"], "'text'")
    context = obj.get("context") or []
    if not isinstance(context, list):
        raise ValueError(f"'context' must be a list of turns, got {type(context).__name__}")
    turns = []
    for i, turn in enumerate(context):
        if not isinstance(turn, dict):
            raise ValueError(f"context[{i}] must be an object with 'role' and 'text'")
        if turn.get("role") not in ROLES:
            raise ValueError(f"context[{i}].role must be one of {list(ROLES)}, got {turn.get('role')!r}")
        turns.append(Turn(turn["role"], _check_text(turn.get("text"), f"context[{i}].text")))
    for key in ("id", "source"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ValueError(f"'{key}' must be a string, got {type(obj[key]).__name__}")
    role = obj.get("role")
    if role is not None and role not in ROLES:
        raise ValueError(f"'role' must be one of {list(ROLES)}, got {role!r}")
    label = obj.get("label")
    if label is None and require_label:
        raise ValueError("missing field 'label'")
    if label is not None and label not in LABELS:
        raise ValueError(f"'label' must be one of {list(LABELS)}, got {label!r}")
    tags = obj.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("'tags' must be a list of strings")
    return Message(text, tuple(turns), obj.get("id"), role, label, obj.get("source"), tuple(tags))


def _lines(path: str) -> Iterator[tuple[int, str]]:
    with contextlib.nullcontext(sys.stdin) if path == "-" else open(path, encoding="utf-8-sig") as stream:
        yield from enumerate(stream, start=1)


def read_messages(paths: Iterable[str | Path], require_label: bool = False) -> list[Message]:
    """Read and validate JSON Lines files (``-`` is stdin); raise :class:`InvalidDataError` listing every bad line.

    Folders are read as every ``*.jsonl`` file inside them, sorted. Blank lines are
    skipped. Training data (``require_label``) also needs unique ids.
    """
    messages, problems, first_seen = [], [], {}
    for path in expand_paths(paths):
        try:
            for number, line in _lines(path):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    message = message_from_json(json.loads(line), require_label)
                except json.JSONDecodeError as error:
                    problems.append(f"{where}: invalid JSON ({error.msg} at column {error.colno})")
                    continue
                except ValueError as error:
                    problems.append(f"{where}: {error}")
                    continue
                if require_label:
                    if message.id is None:
                        problems.append(f"{where}: missing field 'id'")
                        continue
                    if message.id in first_seen:
                        problems.append(f"{where}: duplicate id {message.id!r} (first at {first_seen[message.id]})")
                        continue
                    first_seen[message.id] = where
                messages.append(message)
        except UnicodeDecodeError:
            problems.append(f"{path}:{_first_bad_utf8_line(path)}: not valid UTF-8")
        except OSError as error:
            problems.append(f"{path}:0: cannot read ({error.strerror})")
    if problems:
        raise InvalidDataError(problems)
    return messages


def write_messages(messages: Iterable[Message], path: str | Path) -> None:
    """Write messages as JSON Lines (the format :func:`read_messages` reads), creating the folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for message in messages:
            handle.write(json.dumps(message.to_json(), ensure_ascii=False) + "\n")


def expand_paths(paths: Iterable[str | Path]) -> list[str]:
    """Files as given; folders as their ``*.jsonl`` files, sorted."""
    out = []
    for path in paths:
        path = str(path)
        if path != "-" and Path(path).is_dir():
            out.extend(str(p) for p in sorted(Path(path).rglob("*.jsonl")))
        else:
            out.append(path)
    return out


def _first_bad_utf8_line(path: str) -> int:
    # The decoder's offset is within its buffer, not the file, so look for the line directly.
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0
