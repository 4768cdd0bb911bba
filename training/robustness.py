"""Robustness report: recall and false positives under each evasion family, next to clean text."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from model.labels import LABEL2ID

from .perturb import FAMILIES, perturb

EXTORTION = LABEL2ID["extortion"]


def _rate(predicted: np.ndarray, label: int) -> float | None:
    return float((predicted == label).mean()) if len(predicted) else None


def robustness(classifier, messages, seed: int = 0, batch_size: int = 32) -> dict:
    """Per family: extortion and coercion recall, and the extortion false-positive rate on
    complaint and normal messages, on the perturbed messages and on the same messages clean."""
    disguised = {}
    for family in FAMILIES:
        rng = random.Random(f"{seed}:{family}")
        if pairs := [(i, p) for i, m in enumerate(messages) if (p := perturb(m, family, rng)) is not None]:
            disguised[family] = pairs
    # One call for all: the classifier scores once each input that text preparation turns back into its clean text.
    everything = list(messages) + [p for pairs in disguised.values() for _, p in pairs]
    predicted = classifier.predict_proba(everything, batch_size=batch_size).argmax(axis=1) if everything else np.zeros(0, int)
    clean, start = predicted[: len(messages)], len(messages)
    labels = np.array([LABEL2ID[m.label] for m in messages])
    negatives = np.isin(labels, [LABEL2ID["complaint"], LABEL2ID["normal"]])
    report = {"n": len(messages), "families": {}}
    for family, pairs in disguised.items():
        rows = np.array([i for i, _ in pairs])
        perturbed, start = predicted[start : start + len(pairs)], start + len(pairs)
        entry = {"perturbed_messages": len(pairs)}
        for name, label in (("extortion", EXTORTION), ("coercion", LABEL2ID["coercion"])):
            mask = labels[rows] == label
            entry[f"{name}_n"] = int(mask.sum())
            entry[f"{name}_recall_clean"] = _rate(clean[rows][mask], label)
            entry[f"{name}_recall_perturbed"] = _rate(perturbed[mask], label)
        mask = negatives[rows]
        entry["negatives_n"] = int(mask.sum())
        entry["extortion_fp_clean"] = _rate(clean[rows][mask], EXTORTION)
        entry["extortion_fp_perturbed"] = _rate(perturbed[mask], EXTORTION)
        report["families"][family] = entry
    report["extortion_fp_all_clean_negatives"] = _rate(clean[negatives], EXTORTION)
    return report


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def robustness_table(report: dict) -> str:
    rows = [
        "| family | extortion n | extortion recall clean → perturbed | coercion recall clean → perturbed "
        "| negatives n | extortion FP clean → perturbed (%) |",
        "|---|---|---|---|---|---|",
    ]
    for family, e in report["families"].items():
        rows.append(
            f"| {family} | {e['extortion_n']} | {_fmt(e['extortion_recall_clean'])} → {_fmt(e['extortion_recall_perturbed'])} "
            f"| {_fmt(e['coercion_recall_clean'])} → {_fmt(e['coercion_recall_perturbed'])} | {e['negatives_n']} "
            f"| {_fmt(e['extortion_fp_clean'])} → {_fmt(e['extortion_fp_perturbed'])} |"
        )
    return "\n".join(rows)


def write_robustness(report: dict, out_dir: str | Path, title: str) -> None:
    """``robustness.json``, ``robustness.md`` and the chart ``robustness.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    families = list(report["families"])
    x = np.arange(len(families))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for offset, key, name in ((-0.2, "extortion_recall_clean", "clean"), (0.2, "extortion_recall_perturbed", "perturbed")):
        top.bar(x + offset, [100 * (report["families"][f][key] or 0) for f in families], 0.4, label=name)
    top.set_ylabel("extortion recall (%)")
    top.legend(loc="lower right")
    for offset, key, name in ((-0.2, "extortion_fp_clean", "clean"), (0.2, "extortion_fp_perturbed", "perturbed")):
        bottom.bar(x + offset, [100 * (report["families"][f][key] or 0) for f in families], 0.4, label=name)
    bottom.set_ylabel("extortion FP on negatives (%)")
    bottom.set_xticks(x, families, rotation=30)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / "robustness.png", dpi=120)
    plt.close(fig)
    text = [
        f"# {title}",
        "",
        robustness_table(report),
        "",
        f"Extortion false-positive rate on all clean negatives: {_fmt(report['extortion_fp_all_clean_negatives'])}%.",
        "",
        "Each family disguises the messages it applies to; clean figures are on the same messages undisguised.",
        "",
        "![robustness](robustness.png)",
        "",
    ]
    (out / "robustness.md").write_text("\n".join(text), encoding="utf-8")
