"""Group-aware train/dev/test splits with a frozen, versioned test split and held-out challenge sets.

Messages are grouped so that nothing near-identical crosses splits: one group per
conversation (the id part before ``#``), then groups joined whenever two of their
messages have the same normalised text or a character 3-gram Jaccard similarity
of at least 0.8. The test split is a committed list of ids
(``data/annotations/splits/test-<version>.txt``); once frozen it never changes, so
later models are compared on the same messages. Groups not in it are split into
train and dev by a stable hash. New messages tied to a frozen test group are excluded
from training, and the test split stays exactly the frozen messages. Challenge sets
are grouped with the corpus too, and corpus messages tied to one are excluded.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.feature_extraction.text import CountVectorizer

from model.data_format import Message

NEAR_DUPLICATE_JACCARD = 0.8
TEST_SHARE, DEV_SHARE = 10, 10  # percent of groups, used when a test split is first frozen
_NOT_WORD = re.compile(r"[\W_]+")
_NUMBER = re.compile(r"[0-9零一二三四五六七八九十百千万两]+")


def normalise_for_duplicates(text: str) -> str:
    """NFKC, lower case, numbers masked, punctuation, symbols and spaces dropped."""
    text = _NUMBER.sub("0", unicodedata.normalize("NFKC", text).lower())
    return _NOT_WORD.sub("", text)


def conversation_of(message: Message) -> str:
    """Messages of one conversation share the id part before ``#``."""
    return (message.id or message.text).split("#", 1)[0]


def near_duplicate_pairs(texts: Sequence[str], threshold: float = NEAR_DUPLICATE_JACCARD) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, with equal normalised text or 3-gram Jaccard >= threshold."""
    normalised = [normalise_for_duplicates(t) or t for t in texts]
    # Texts under 3 characters have no 3-gram; pad so that equal short texts still match.
    padded = [f"^{t}$" for t in normalised]
    grams = CountVectorizer(analyzer="char", ngram_range=(3, 3), binary=True, lowercase=False).fit_transform(padded)
    grams = grams.astype(np.int32).tocsr()
    sizes = np.asarray(grams.sum(axis=1)).ravel()
    shared = (grams @ grams.T).tocoo()
    upper = shared.row < shared.col
    rows, cols, inter = shared.row[upper], shared.col[upper], shared.data[upper]
    jaccard = inter / (sizes[rows] + sizes[cols] - inter)
    keep = jaccard >= threshold
    return np.stack([rows[keep], cols[keep]], axis=1)


def group_ids(messages: Sequence[Message]) -> list[str]:
    """A group name per message: the smallest conversation id among the messages it is tied to."""
    conversations = [conversation_of(m) for m in messages]
    names = sorted(set(conversations))
    index = {name: i for i, name in enumerate(names)}
    of_message = np.array([index[c] for c in conversations], dtype=np.int64)
    pairs = near_duplicate_pairs([m.text for m in messages])
    a, b = of_message[pairs[:, 0]], of_message[pairs[:, 1]]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(names), len(names)))
    _, component = connected_components(graph, directed=False)
    smallest = {}
    for name, c in zip(names, component, strict=True):
        smallest.setdefault(c, name)  # names are sorted, so the first is the smallest
    return [smallest[component[index[c]]] for c in conversations]


def _bucket(group: str) -> int:
    return int(hashlib.sha1(group.encode("utf-8")).hexdigest(), 16) % 100


def assign_splits(messages: Sequence[Message], frozen_test: set[str] | None, challenge_ids: frozenset[str] = frozenset()) -> list[str]:
    """``train``/``dev``/``test``/``challenge``/``excluded`` per message.

    Challenge messages are ``challenge``. With a frozen list, exactly its ids are ``test``
    and the other messages of their groups are ``excluded`` (held out, but the test split
    stays the same messages); without one, 10% of groups by hash are ``test``. A group
    holding a challenge message is ``excluded``; the rest go to dev (10%) or train by hash.
    """
    groups = group_ids(messages)
    if frozen_test is None:
        test_groups = {g for g in groups if _bucket(g) < TEST_SHARE}
    else:
        test_groups = {g for g, m in zip(groups, messages, strict=True) if m.id in frozen_test}
    challenge_groups = {g for g, m in zip(groups, messages, strict=True) if m.id in challenge_ids}
    splits = []
    for group, message in zip(groups, messages, strict=True):
        if message.id in challenge_ids:
            splits.append("challenge")
        elif group in test_groups:
            splits.append("test" if frozen_test is None or message.id in frozen_test else "excluded")
        elif group in challenge_groups:
            splits.append("excluded")
        else:
            splits.append("dev" if TEST_SHARE <= _bucket(group) < TEST_SHARE + DEV_SHARE else "train")
    return splits


def read_frozen_test(path: str | Path) -> set[str] | None:
    """Ids of a frozen test split (one per line), or None when the file does not exist yet."""
    path = Path(path)
    if not path.exists():
        return None
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")}


def freeze_test(messages: Sequence[Message], splits: Sequence[str], path: str | Path, note: str) -> int:
    """Write the test ids, sorted, behind a comment line; returns how many."""
    ids = sorted(m.id for m, s in zip(messages, splits, strict=True) if s == "test")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(f"# {note}\n" + "\n".join(ids) + "\n", encoding="utf-8")
    return len(ids)
