"""Evaluation: per-class metrics, confusion matrix, precision-recall curves, calibration, thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_curve, precision_recall_fscore_support

from model.labels import LABEL2ID, LABELS

from .paired import write_predictions


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Gap between confidence and accuracy of the top label, averaged over equal-width confidence bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            gap += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(gap)


def threshold_for_precision(y_true: np.ndarray, probs: np.ndarray, label: int, target: float) -> dict:
    """Lowest probability threshold at which ``label`` reaches ``target`` precision, with the recall it keeps."""
    if not (y_true == label).any():
        return {"threshold": None, "precision": None, "recall": None}
    precision, recall, thresholds = precision_recall_curve(y_true == label, probs[:, label])
    reaching = np.flatnonzero(precision[:-1] >= target)
    if reaching.size == 0:
        return {"threshold": None, "precision": None, "recall": 0.0}
    i = reaching[0]
    return {"threshold": float(thresholds[i]), "precision": float(precision[i]), "recall": float(recall[i])}


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, target_precision: float = 0.95) -> dict:
    """Every figure of the evaluation report, as plain JSON-ready values."""
    y_pred = probs.argmax(axis=1)
    ids = list(range(len(LABELS)))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, label in enumerate(LABELS)
        },
        "confusion_matrix": {"labels": list(LABELS), "rows_true_cols_predicted": confusion_matrix(y_true, y_pred, labels=ids).tolist()},
        "expected_calibration_error": expected_calibration_error(y_true, probs),
        "thresholds_at_target_precision": {
            "target_precision": target_precision,
            **{label: threshold_for_precision(y_true, probs, i, target_precision) for i, label in enumerate(LABELS)},
        },
    }


def metrics_table(metrics: dict) -> str:
    """Markdown table of per-class precision, recall, F1 and support, then macro-F1."""
    rows = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label, m in metrics["per_class"].items():
        rows.append(f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    rows.append(f"| **macro** | | | **{metrics['macro_f1']:.3f}** | {metrics['n']} |")
    return "\n".join(rows)


def _plot_confusion(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.array(metrics["confusion_matrix"]["rows_true_cols_predicted"])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ConfusionMatrixDisplay(matrix, display_labels=LABELS).plot(ax=ax, colorbar=False, xticks_rotation=30)
    ax.set_title(f"Confusion matrix (n={metrics['n']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_pr_curves(y_true: np.ndarray, probs: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import PrecisionRecallDisplay

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for i, label in enumerate(LABELS):
        if (y_true == i).any():
            PrecisionRecallDisplay.from_predictions(y_true == i, probs[:, i], name=label, ax=ax)
    ax.set_title("Precision-recall, one label against the rest")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(y_true: np.ndarray, probs: np.ndarray, out_dir: str | Path, title: str, target_precision: float = 0.95) -> dict:
    """Write ``metrics.json``, ``report.md``, ``confusion_matrix.png`` and ``pr_curves.png``; return the metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(y_true, probs, target_precision)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _plot_confusion(metrics, out / "confusion_matrix.png")
    _plot_pr_curves(y_true, probs, out / "pr_curves.png")
    thresholds = metrics["thresholds_at_target_precision"]
    lines = [
        f"# {title}",
        "",
        metrics_table(metrics),
        "",
        f"Accuracy {metrics['accuracy']:.3f}; expected calibration error {metrics['expected_calibration_error']:.3f} (10 bins, top label).",
        "",
        f"## Thresholds reaching precision {target_precision:.2f}",
        "",
        "| label | threshold | precision | recall |",
        "|---|---|---|---|",
    ]
    for label in LABELS:
        t = thresholds[label]
        if t["recall"] is None:
            lines.append(f"| {label} | no examples | | |")
        elif t["threshold"] is None:
            lines.append(f"| {label} | not reachable | | 0.000 |")
        else:
            lines.append(f"| {label} | {t['threshold']:.3f} | {t['precision']:.3f} | {t['recall']:.3f} |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", "", "![precision-recall curves](pr_curves.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return metrics


def evaluate(
    classifier, messages, out_dir: str | Path, title: str = "Evaluation", batch_size: int = 32, target_precision: float = 0.95
) -> dict:
    """Predict labelled ``messages`` with ``classifier`` and write the report into ``out_dir``."""
    unlabelled = [m.id for m in messages if m.label is None]
    if unlabelled:
        raise ValueError(f"{len(unlabelled)} messages have no label (first: {unlabelled[0]!r}); evaluation needs labels")
    probs = classifier.predict_proba(messages, batch_size=batch_size)
    y_true = np.array([LABEL2ID[m.label] for m in messages])
    metrics = write_report(y_true, probs, out_dir, title, target_precision)
    write_predictions(out_dir, [m.id or f"#{i}" for i, m in enumerate(messages)], y_true, probs.argmax(axis=1))
    return metrics


def extortion_rate(classifier, messages, batch_size: int = 32) -> dict:
    """Share of messages predicted ``extortion``: on text known not to be extortion, a false-positive rate.

    ``flagged`` lists the ids of the flagged messages (for real text, ``source:line``; never the text).
    """
    if not messages:
        return {"n": 0, "extortion": 0, "rate": 0.0, "flagged": []}
    labels = classifier.predict_proba(messages, batch_size=batch_size).argmax(axis=1)
    flagged = [m.id for m, label in zip(messages, labels, strict=True) if label == LABEL2ID["extortion"]]
    return {"n": len(messages), "extortion": len(flagged), "rate": len(flagged) / len(messages), "flagged": flagged}
