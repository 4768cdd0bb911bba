"""Real text that others wrote, loaded at training time from where it lives, never copied here.

``data/annotations/sources.json`` lists each source: where it lives (a file inside
an installed package, or a path), its format, the weak label its lines get, the
filters, and how many lines feed training (chosen by a stable hash of the line
number, so the rest stays unseen for estimating false positives).
``data/annotations/relabels.jsonl`` holds the lines a person read, by source and line: the label they gave and, where
a model's flag sent them there, what the model predicted (a wrong prediction makes the line a hard case in training).
A missing source is skipped with a warning: training works without them.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from model.data_format import Message
from model.labels import LABELS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One external corpus as ``sources.json`` describes it."""

    name: str
    weak_label: str
    path: str
    package: str | None = None
    column: str | None = None
    min_chars: int = 4
    max_chars: int = 300
    train_lines: int = 0
    held_out_lines: int | None = None
    """At most this many of the remaining lines are kept for false-positive estimates (None: all)."""
    field: int | None = None
    """In a tab-separated text file, the field that holds the message (a dialogue file's question or answer column)."""
    segmented: bool = False
    """The text was word-segmented with spaces (as dialogue corpora often are); the spaces around Chinese characters are removed."""
    license: str = ""

    def location(self) -> Path | None:
        """The file on this machine, or None when it is not there."""
        if self.package is None:
            path = Path(self.path)
        else:
            spec = importlib.util.find_spec(self.package)
            if spec is None or not spec.submodule_search_locations:
                return None
            path = Path(spec.submodule_search_locations[0]) / self.path
        return path if path.exists() else None


def read_sources(config_path: str | Path) -> list[Source]:
    """Parse ``sources.json``; a relative ``path`` without ``package`` is relative to the file's folder."""
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    sources = []
    for entry in config["sources"]:
        if entry.get("package") is None and not Path(entry["path"]).is_absolute():
            entry = {**entry, "path": str(Path(config_path).parent / entry["path"])}
        sources.append(Source(**entry))
    for source in sources:
        if source.weak_label not in LABELS:
            raise ValueError(f"{config_path}: source {source.name!r} has weak_label {source.weak_label!r}, not one of {list(LABELS)}")
    return sources


@dataclass(frozen=True)
class Relabel:
    """A line a person read: its label, and what a model predicted when that model's flag sent the person to it."""

    label: str
    predicted: str | None = None


def read_relabels(path: str | Path) -> dict[tuple[str, int], Relabel]:
    """``(source, line) -> Relabel`` from the committed relabel list (empty when absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    relabels = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            entry = json.loads(line)
            for field_name in ("label", "predicted"):
                if entry.get(field_name, "extortion") not in LABELS:
                    raise ValueError(f"{path}:{number}: {field_name} {entry[field_name]!r} is not one of {list(LABELS)}")
            relabels[(entry["source"], int(entry["line"]))] = Relabel(entry["label"], entry.get("predicted"))
    return relabels


_SPACE_BESIDE_CHINESE = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef]) +| +(?=[\u3000-\u9fff\uff00-\uffef])")


def _raw_lines(source: Source, path: Path):
    if source.column is None:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                text = line.rstrip("\r\n")
                if source.field is not None:
                    fields = text.split("\t")
                    text = fields[source.field] if -len(fields) <= source.field < len(fields) else ""
                if source.segmented:
                    text = _SPACE_BESIDE_CHINESE.sub("", text)
                yield number, text.strip()
    else:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):  # line 1 is the header
                yield number, (row.get(source.column) or "").strip()


def in_training_sample(source: Source, line: int, total: int) -> bool:
    """Whether a line feeds training: a stable hash picks about ``train_lines`` of ``total``."""
    if source.train_lines <= 0 or total == 0:
        return False
    bucket = int(hashlib.sha1(f"{source.name}:{line}".encode()).hexdigest(), 16) % 1_000_000
    return bucket < 1_000_000 * source.train_lines / total


def load_source(source: Source, relabels: dict[tuple[str, int], Relabel]) -> tuple[list[Message], list[Message]]:
    """``(training sample, held-out rest)`` of one source, filtered and relabelled; both empty when absent."""
    path = source.location()
    if path is None:
        log.warning("source %s is not on this machine (%s); skipped", source.name, source.package or source.path)
        return [], []
    kept, seen = [], set()
    for number, text in _raw_lines(source, path):
        if not (source.min_chars <= len(text) <= source.max_chars) or text in seen:
            continue
        seen.add(text)
        relabel = relabels.get((source.name, number))
        if relabel is None:
            label, tags = source.weak_label, ("weak-label",)
        else:  # a model's wrong flag makes the line a hard case (training.data.is_hard_case), as in the adversarial rounds
            label, tags = relabel.label, ("read",) + ((f"model:{relabel.predicted}",) if relabel.predicted else ())
        kept.append(Message(text, id=f"{source.name}:{number}", label=label, source=f"external:{source.name}", tags=tags))
    train, held_out = [], []
    for message in kept:
        line = int(message.id.rsplit(":", 1)[1])
        (train if in_training_sample(source, line, len(kept)) else held_out).append(message)
    return train, held_out[: source.held_out_lines]


def load_sources(config_path: str | Path, relabels_path: str | Path | None = None) -> dict[str, tuple[list[Message], list[Message]]]:
    """Every source in the list: name -> (training sample, held-out rest)."""
    relabels = read_relabels(relabels_path) if relabels_path else {}
    return {source.name: load_source(source, relabels) for source in read_sources(config_path)}
