"""Labelled messages for training and evaluation: corpus splits, challenge sets, external text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset

from model.data_format import Message, expand_paths, read_messages
from model.inputs import encode_messages
from model.labels import LABEL2ID, LABELS

from .sources import load_sources
from .splits import assign_splits, read_frozen_test

SPLITS = ("train", "dev", "test")


@dataclass
class Corpus:
    """Everything one run trains and evaluates on."""

    train: list[Message] = field(default_factory=list)
    dev: list[Message] = field(default_factory=list)
    test: list[Message] = field(default_factory=list)
    challenges: dict[str, list[Message]] = field(default_factory=dict)
    """Challenge set name (file stem) -> its messages; never trained on."""
    eval_sets: dict[str, list[Message]] = field(default_factory=dict)
    """Independent evaluation set name -> its messages (:func:`read_eval_sets`); never trained or tuned on."""
    tuning: list[Message] = field(default_factory=list)
    """Independently written messages the operating point may be tuned on (``TrainConfig.tuning_sets``); never trained on."""
    external_train: dict[str, list[Message]] = field(default_factory=dict)
    """External source name -> its weak-labelled training sample (kept apart from ``train``)."""
    external_held_out: dict[str, list[Message]] = field(default_factory=dict)
    """External source name -> the lines not used for training (false-positive estimates)."""
    excluded: list[Message] = field(default_factory=list)
    """Corpus messages left out of training because they near-duplicate a challenge or evaluation-set message."""
    focus: dict | None = None
    """How a retrain narrowed ``train`` to its new labels (:func:`training.retrain.focus_on_new_labels`); none: untouched."""

    def labelled(self) -> tuple[list[Message], list[str]]:
        """The corpus messages (no external text, no challenge sets) and the split of each."""
        parts = [("train", self.train), ("dev", self.dev), ("test", self.test), ("excluded", self.excluded)]
        return [m for _, ms in parts for m in ms], [name for name, ms in parts for _ in ms]


def load_corpus(
    paths: Sequence[str],
    frozen_test: str | None = None,
    challenge_paths: Sequence[str] = (),
    sources: str | None = None,
    relabels: str | None = None,
    eval_paths: Sequence[str] = (),
    tuning_paths: Sequence[str] = (),
) -> Corpus:
    """Read and validate labelled data (raising on any bad line), then split it.

    ``frozen_test`` names the committed list of test ids (absent or None: 10% of
    groups by hash). External sources' training samples are kept in ``external_train``.
    """
    messages = read_messages(paths, require_label=True)
    corpus = Corpus()
    for path in expand_paths(challenge_paths):
        corpus.challenges[Path(path).stem] = read_messages([path], require_label=True)
    corpus.eval_sets = read_eval_sets(eval_paths)
    corpus.tuning = [m for tuning_set in read_eval_sets(tuning_paths).values() for m in tuning_set]
    held_out_sets = (*corpus.challenges.values(), *corpus.eval_sets.values(), corpus.tuning)
    challenge_messages = [m for held_out in held_out_sets for m in held_out]
    everything = messages + challenge_messages
    duplicate_ids = [i for i, n in Counter(m.id for m in everything).items() if n > 1]
    if duplicate_ids:
        raise ValueError(f"ids used twice across the corpus, challenge, evaluation and tuning sets: {duplicate_ids[:5]}")
    splits = assign_splits(everything, read_frozen_test(frozen_test) if frozen_test else None, frozenset(m.id for m in challenge_messages))
    for message, split in zip(messages, splits[: len(messages)], strict=True):  # the held-out sets' splits follow
        getattr(corpus, split).append(message)
    if sources and Path(sources).exists():
        for name, (sample, held_out) in load_sources(sources, relabels).items():
            if sample:
                corpus.external_train[name] = sample
            if held_out:
                corpus.external_held_out[name] = held_out
    return corpus


def corpus_for(config) -> Corpus:
    """The corpus a :class:`~training.training_args.TrainConfig` names: its data, frozen test, held-out sets and real text."""
    return load_corpus(
        config.data, config.frozen_test, config.challenge, config.sources, config.relabels, config.eval_sets, config.tuning_sets
    )


def read_eval_sets(paths: Sequence[str]) -> dict[str, list[Message]]:
    """Set name -> labelled messages. In a folder (``data/annotations/eval``), each ``*.jsonl`` file is a set named
    by its stem and each subfolder one set named by the folder (``blind/`` holds one file per writer); a file given
    directly is a set named by its stem. Missing paths are skipped."""
    sets = {}
    for path in map(Path, paths):
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.suffix == ".jsonl" or (child.is_dir() and any(child.rglob("*.jsonl"))):
                    sets[child.stem if child.is_file() else child.name] = read_messages([child], require_label=True)
        elif path.exists():
            sets[path.stem] = read_messages([path], require_label=True)
    return sets


def label_counts(messages: Sequence[Message]) -> dict[str, int]:
    counts = Counter(m.label for m in messages)
    return {label: counts.get(label, 0) for label in LABELS}


def is_hard_case(message: Message) -> bool:
    """An earlier model got this message wrong: the adversarial rounds tag each message ``model:<what it said>``."""
    said = [tag.removeprefix("model:") for tag in message.tags if tag.startswith("model:")]
    return bool(said) and said[0] != message.label


def to_dataset(
    messages: Sequence[Message], tokenizer, max_length: int, text_preparation: str, role_marker: str = "none", hard_case_weight: float = 1.0
) -> Dataset:
    """Tokenised ``datasets.Dataset`` with ``input_ids``, ``token_type_ids``, ``labels`` and ``length``, and a loss
    ``weight`` per message when hard cases weigh more than 1."""
    encoded = encode_messages(tokenizer, messages, max_length, text_preparation, role_marker)
    columns = {
        "input_ids": encoded.input_ids,
        "labels": [LABEL2ID[m.label] for m in messages],
        "length": [len(i) for i in encoded.input_ids],
    }
    if hard_case_weight != 1.0:
        columns["weight"] = [hard_case_weight if is_hard_case(m) else 1.0 for m in messages]
    if "token_type_ids" in tokenizer.model_input_names:
        columns["token_type_ids"] = encoded.token_type_ids
    return Dataset.from_dict(columns)
