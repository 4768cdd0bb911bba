"""Paired comparisons of two models on the same items, so the promotion gate tells a real regression from noise.

Macro-F1 differences get a paired bootstrap interval: the same resampled items score both models, so what the two
share cancels out. Extortion flags on real text (where every flag is a false positive) get an exact one-sided
McNemar test on the lines only one model flags. Both are seeded: the same inputs always give the same decision.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.labels import LABELS

PREDICTIONS_FILE = "predictions.parquet"


def write_predictions(out_dir: str | Path, ids: list[str], labels: np.ndarray, predicted: np.ndarray) -> None:
    """Each evaluated message's id, true and predicted label index (no text), for paired comparisons."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": ids, "label": np.asarray(labels, dtype=np.int8), "predicted": np.asarray(predicted, dtype=np.int8)})
    pq.write_table(table, Path(out_dir) / PREDICTIONS_FILE)


def read_paired(parent_dir: Path, candidate_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """True labels and both models' predictions on the items both scored, aligned by id; None where either is missing."""
    import pyarrow.parquet as pq

    if not (parent_dir / PREDICTIONS_FILE).exists() or not (candidate_dir / PREDICTIONS_FILE).exists():
        return None
    parent = {r["id"]: r for r in pq.read_table(parent_dir / PREDICTIONS_FILE).to_pylist()}
    candidate = pq.read_table(candidate_dir / PREDICTIONS_FILE).to_pylist()
    shared = [r for r in candidate if r["id"] in parent and parent[r["id"]]["label"] == r["label"]]
    if not shared:
        return None
    return (
        np.array([r["label"] for r in shared]),
        np.array([parent[r["id"]]["predicted"] for r in shared]),
        np.array([r["predicted"] for r in shared]),
    )


def macro_f1_rows(labels: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro-F1 over the four labels for each row of item ``weights`` (resample counts), as scikit-learn computes it
    with zero_division=0; vectorised so that thousands of resamples take a moment."""
    k = len(LABELS)
    f1 = np.zeros((weights.shape[0], k))
    for label in range(k):
        true, said = labels == label, predicted == label
        tp = weights[:, true & said].sum(1)
        denominator = weights[:, true].sum(1) + weights[:, said].sum(1)
        f1[:, label] = np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=float), where=denominator > 0)
    return f1.mean(1)


def macro_f1_difference(
    labels: np.ndarray, parent: np.ndarray, candidate: np.ndarray, confidence: float = 0.90, resamples: int = 2000, seed: int = 0
) -> dict:
    """Paired bootstrap of candidate minus parent macro-F1: the percentile ``interval`` and ``p_value``, the share of
    resamples in which the candidate is not worse (a one-sided test that it is worse)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)]).astype(float)
    differences = macro_f1_rows(labels, candidate, weights) - macro_f1_rows(labels, parent, weights)
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return {"n": n, "interval": [round(float(low), 6), round(float(high), 6)], "p_value": float(np.mean(differences >= 0))}


def more_flags_p_value(only_candidate: int, only_parent: int) -> float:
    """Exact one-sided McNemar test: the chance of the candidate flagging at least this many lines the parent did not,
    if each line flagged by one model only were equally likely to be either's."""
    from scipy.stats import binomtest

    discordant = only_candidate + only_parent
    return 1.0 if discordant == 0 else float(binomtest(only_candidate, discordant, 0.5, alternative="greater").pvalue)


def flag_counts(parent_rates: dict, candidate_rates: dict, sources: tuple[str, ...]) -> dict:
    """Lines flagged by the candidate only and by the parent only, over ``sources`` (``flagged`` ids per source)."""
    only_candidate = only_parent = 0
    for name in sources:
        if name in parent_rates and name in candidate_rates:
            parent, candidate = set(parent_rates[name].get("flagged", [])), set(candidate_rates[name].get("flagged", []))
            only_candidate, only_parent = only_candidate + len(candidate - parent), only_parent + len(parent - candidate)
    return {"only_candidate": only_candidate, "only_parent": only_parent, "p_value": more_flags_p_value(only_candidate, only_parent)}


def paired_evidence(parent_eval: Path, candidate_eval: Path, parent_results: dict, candidate_results: dict, sources) -> dict:
    """Check name -> interval (macro-F1 sets) or discordant counts (real reviews), for :func:`training.registry.check_promotion`."""
    folders = {"test macro-F1": "test"}
    folders |= {f"challenge {name} macro-F1": f"challenge-{name}" for name in candidate_results.get("challenges", {})}
    folders |= {f"evaluation set {name} macro-F1": f"eval-{name}" for name in candidate_results.get("eval_sets", {})}
    evidence = {}
    for check, folder in folders.items():
        paired = read_paired(parent_eval / folder, candidate_eval / folder)
        if paired is not None:
            evidence[check] = macro_f1_difference(*paired)
    external = (parent_results.get("external_extortion_rate", {}), candidate_results.get("external_extortion_rate", {}))
    if all(any(name in rates for name in sources) for rates in external):
        evidence["extortion rate on real reviews"] = flag_counts(*external, sources)
    return json.loads(json.dumps(evidence))  # plain floats and lists, as comparison.json reads back
