"""Inter-annotator agreement: Cohen's kappa overall and per label (one label against the rest)."""

from __future__ import annotations

import json
from pathlib import Path

from sklearn.metrics import cohen_kappa_score, confusion_matrix

from model.labels import LABELS


def read_labels(path: str | Path) -> dict[str, str]:
    """``id -> label`` from JSON Lines with ``id`` and ``label``."""
    labels = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            record = json.loads(line)
            if record.get("label") not in LABELS:
                raise ValueError(f"{path}:{number}: label {record.get('label')!r} is not one of {list(LABELS)}")
            labels[record["id"]] = record["label"]
    return labels


def agreement(first: dict[str, str], second: dict[str, str]) -> dict:
    """Kappa, raw agreement, per-label kappa, confusion matrix and disagreeing ids over the shared ids."""
    ids = sorted(set(first) & set(second))
    if not ids:
        raise ValueError("the two annotations share no ids")
    a, b = [first[i] for i in ids], [second[i] for i in ids]
    return {
        "n": len(ids),
        "agreement": sum(x == y for x, y in zip(a, b, strict=True)) / len(ids),
        "kappa": float(cohen_kappa_score(a, b, labels=list(LABELS))),
        "kappa_per_label": {label: float(cohen_kappa_score([x == label for x in a], [y == label for y in b])) for label in LABELS},
        "confusion_rows_first_cols_second": confusion_matrix(a, b, labels=list(LABELS)).tolist(),
        "disagreements": [i for i in ids if first[i] != second[i]],
    }
