"""The operating point: the constant the extortion logit is lowered by before the arg-max, chosen on labelled messages.

Training ends with logits whose extortion column may sit too high or too low for the text the model will meet. The
shift is chosen on the dev split (written by the corpus writers) or, better, on the tuning sets: messages written
independently of the corpus, as the evaluation sets are, but by other writers, so that choosing on them leaves the
headline figures untouched. The shift is stored in the classification head's bias, so every runtime applies it, and in
the config, so it can be undone (:func:`undo_shift`).
"""

from __future__ import annotations

import numpy as np
import torch

from model.labels import LABEL2ID, LABELS

SHIFT_KEY = "extortion_guard_extortion_logit_shift"


def messages_to_tune_on(rule: str, corpus) -> list:
    """The labelled messages ``rule`` chooses the shift on: the dev split or the tuning sets (which must then exist)."""
    if rule == "dev-macro-f1":
        return corpus.dev
    if not corpus.tuning:
        raise ValueError(f"tune_extortion_shift={rule} needs tuning sets, but none were found (TrainConfig.tuning_sets)")
    return corpus.tuning


def shift_curve(logits: np.ndarray, labels: np.ndarray, largest: float = 3.0, step: float = 0.05) -> list[dict]:
    """For each shift in [0, ``largest``]: macro-F1 and extortion precision and recall of the shifted arg-max."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    extortion, curve = LABEL2ID["extortion"], []
    for shift in np.arange(0.0, largest + step / 2, step):
        shifted = logits.copy()
        shifted[:, extortion] -= shift
        predicted = shifted.argmax(axis=1)
        precision, recall, _, _ = precision_recall_fscore_support(labels, predicted, labels=[extortion], zero_division=0)
        macro_f1 = f1_score(labels, predicted, labels=list(range(len(LABELS))), average="macro", zero_division=0)
        curve.append(
            {
                "shift": round(float(shift), 4),
                "macro_f1": float(macro_f1),
                "extortion_precision": float(precision[0]),
                "extortion_recall": float(recall[0]),
            }
        )
    return curve


def extortion_logit_shift(
    logits: np.ndarray,
    labels: np.ndarray,
    rule: str = "dev-macro-f1",
    target_precision: float = 0.95,
    largest: float = 3.0,
    step: float = 0.05,
) -> float:
    """The shift ``rule`` picks on these labelled logits: the highest macro-F1 (the smallest shift on ties), or for
    ``tuning-precision`` the smallest shift whose extortion precision reaches ``target_precision`` (macro-F1 where none does)."""
    curve = shift_curve(logits, labels, largest, step)
    if rule == "tuning-precision":
        reaching = [point for point in curve if point["extortion_precision"] >= target_precision]
        if reaching:
            return reaching[0]["shift"]
    best = max(curve, key=lambda point: (point["macro_f1"], -point["shift"]))
    return best["shift"]


def classification_head(model) -> torch.nn.Linear:
    """The last linear layer that maps to the labels (BERT's ``classifier``, RoBERTa's ``classifier.out_proj``)."""
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == len(LABELS)][-1]


def apply_shift(model, shift: float) -> None:
    """Lower the extortion logit by ``shift`` (on top of the weights as trained) and record it in the config."""
    with torch.no_grad():
        classification_head(model).bias[LABEL2ID["extortion"]] -= shift
    setattr(model.config, SHIFT_KEY, shift)


def undo_shift(model) -> None:
    """Give the extortion logit back the shift recorded in the config: the weights as trained."""
    with torch.no_grad():
        classification_head(model).bias[LABEL2ID["extortion"]] += getattr(model.config, SHIFT_KEY, None) or 0.0
    setattr(model.config, SHIFT_KEY, None)
