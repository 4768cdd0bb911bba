"""The shipped corpus: sizes, splits without leaks, challenge sets (the corpus issue's guarantees)."""

import re
from collections import Counter

import pytest

from training.data import load_corpus
from training.splits import assign_splits, near_duplicate_pairs, read_frozen_test

FROZEN_TEST = "data/annotations/splits/test-v1.txt"
MINIMUM = {"extortion": 2000, "coercion": 1200, "complaint": 2500, "normal": 3500}


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(
        ["data/annotations/messages"],
        FROZEN_TEST,
        ["data/annotations/challenge"],
        eval_paths=["data/annotations/eval"],
        tuning_paths=["data/annotations/tuning"],
    )


def test_corpus_size_and_label_minimums(corpus):
    messages, _ = corpus.labelled()
    assert len(messages) >= 10_000
    counts = Counter(m.label for m in messages)
    for label, minimum in MINIMUM.items():
        assert counts[label] >= minimum, (label, counts[label])
    assert sum(1 for m in messages if m.context and "context-dependent" in m.tags) >= 0.3 * len(messages)
    assert len({next(t for t in m.tags if t.startswith("domain:")) for m in messages}) >= 25
    plain_extortion = [m for m in messages if m.label == "extortion" and not any(w in m.text for w in ("差评", "钱", "转账"))]
    assert len(plain_extortion) >= 600


def test_texts_stay_distinct_once_numbers_are_masked(corpus):
    messages, _ = corpus.labelled()
    masked = {re.sub(r"[0-9零一二三四五六七八九十百千万两]+", "#", m.text) for m in messages}
    assert len(masked) >= 0.95 * len(messages)


def test_every_line_says_how_it_was_made(corpus):
    messages, _ = corpus.labelled()
    assert {m.source for m in messages} <= {"written", "generated", "perturbed"}


def test_challenge_sets_keep_at_least_200_items(corpus):
    assert set(corpus.challenges) >= {"obfuscated", "hard_negatives", "context_dependent", "keyword_free"}
    for name, messages in corpus.challenges.items():
        assert len(messages) >= 200, name


def test_no_near_duplicate_crosses_splits(corpus):
    messages, _ = corpus.labelled()
    challenge = [m for ms in (*corpus.challenges.values(), *corpus.eval_sets.values(), corpus.tuning) for m in ms]
    everything = messages + challenge
    splits = assign_splits(everything, read_frozen_test(FROZEN_TEST), frozenset(m.id for m in challenge))
    # Challenge, evaluation and tuning sets, test and excluded messages are all kept out of training, so ties among them leak nothing.
    allowed_across = {frozenset({"challenge", "excluded"}), frozenset({"challenge", "test"}), frozenset({"test", "excluded"})}
    crossing = [
        (everything[i].id, splits[i], everything[j].id, splits[j])
        for i, j in near_duplicate_pairs([m.text for m in everything]).tolist()
        if splits[i] != splits[j] and frozenset({splits[i], splits[j]}) not in allowed_across
    ]
    assert not crossing, crossing[:10]


def test_frozen_test_split_is_intact(corpus):
    frozen = read_frozen_test(FROZEN_TEST)
    assert frozen is not None and len(frozen) >= 900
    assert frozen == {m.id for m in corpus.test}, "the test split is no longer exactly the frozen messages"


def test_independent_evaluation_sets_are_held_out_and_say_who_wrote_them(corpus):
    blind = corpus.eval_sets["blind"]
    assert len(blind) >= 800
    writers = Counter(next(t for t in m.tags if t.startswith("writer:")) for m in blind)
    assert len(writers) >= 4 and all(any(t.startswith("register:") for t in m.tags) for m in blind)
    assert all(m.id.startswith("blind-") for m in blind)
    held_out = {m.id for ms in corpus.eval_sets.values() for m in ms}
    assert not held_out & {m.id for m in corpus.train + corpus.dev + corpus.test}
    assert {m.label for m in blind} == {"extortion", "coercion", "complaint", "normal"}


def test_tuning_sets_are_held_out_and_written_by_other_writers_than_the_blind_set(corpus):
    assert len(corpus.tuning) >= 800 and all(m.id.startswith("tune-") for m in corpus.tuning)
    writers = {next(t for t in m.tags if t.startswith("writer:")) for m in corpus.tuning}
    blind_writers = {next(t for t in m.tags if t.startswith("writer:")) for m in corpus.eval_sets["blind"]}
    assert len(writers) >= 4 and not writers & blind_writers
    assert not {m.id for m in corpus.tuning} & {m.id for m in corpus.train + corpus.dev + corpus.test}
