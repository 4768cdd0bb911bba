"""The model card (README.md) written into every trained model folder."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from model.classifier import model_version
from model.labels import LABELS

from .evaluate import metrics_table
from .training_args import TrainConfig

CARD_DATA = {
    "language": "zh",
    "license": "mit",
    "pipeline_tag": "text-classification",
    "library_name": "transformers",
    "tags": ["extortion-guard", "e-commerce", "moderation"],
}
FRAMEWORKS = ("torch", "transformers", "tokenizers", "datasets", "huggingface_hub", "scikit-learn")


def write_model_card(out: Path, config: TrainConfig, summary: dict) -> None:
    """Fill in data, base, training arguments and evaluation results."""
    counts = summary["counts"]
    size_mb = sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2**20
    lines = [
        f"# Extortion Guard classifier `{model_version(out)}`",
        "",
        "Classifies one buyer–seller chat message, judged with the turns before it, as "
        + ", ".join(f"`{label}`" for label in LABELS)
        + " (see `data/annotations/GUIDELINES.md`). Message and context are encoded as a pair; "
        f"the window is {config.max_length} tokens and the context loses its oldest tokens first.",
        "",
        "```python",
        "from model import ExtortionClassifier",
        'clf = ExtortionClassifier.from_pretrained("path/to/this/folder")  # no argument: the current model (see models list)',
        'clf.predict({"text": "钱呢？", "context": [{"role": "buyer", "text": "给我转500，不然差评"}]})',
        "```",
        "",
        'It is also a standard `transformers` folder: `pipeline("text-classification", model=...)` loads it (message only, no context).',
        "",
        "## Data",
        "",
        f"Labelled messages from {', '.join(f'`{p}`' for p in config.data)}, split by group (a conversation with its near-duplicates); "
        f"the test split is the frozen list `{config.frozen_test}`. "
        f"Challenge sets: {', '.join(f'`{p}`' for p in config.challenge) or 'none'}.",
        "",
        "| split | " + " | ".join(LABELS) + " | total |",
        "|---|" + "---|" * (len(LABELS) + 1),
    ]
    for split, by_label in counts.items():
        lines.append(f"| {split} | " + " | ".join(str(by_label[label]) for label in LABELS) + f" | {sum(by_label.values())} |")
    lines.append("")
    for name, by_label in summary.get("external_train", {}).items():
        lines.append(
            f"- plus {sum(by_label.values())} weak-labelled lines of external source `{name}` in training: "
            + ", ".join(f"{label} {n}" for label, n in by_label.items() if n)
        )
    if summary.get("focus"):
        focus = summary["focus"]
        lines.append(
            f"- a retrain on new labels: the train split above is {focus['new_labels']} new moderator labels, each "
            f"{focus['repeats']} times, beside a random sample of {focus['replayed']} corpus and real-text messages replayed "
            "(`extortion-guard retrain --new-label-repeats --replay`)"
        )
    if summary.get("augmented"):
        lines.append(
            f"- plus {summary['augmented']} disguised copies of training messages (evasion families, share {config.augment_share})"
        )
    lines += [
        f"- texts go through the `{config.text_preparation}` text preparation (`model/inputs.py`)"
        + ("; a seller's message is read behind the seller marker" if config.role_marker == "seller" else ""),
        "",
        "## Training",
        "",
        f"- Not trained further: the weights of {summary['averaged_from']}, averaged tensor by tensor (`extortion-guard models average`)"
        if summary.get("averaged_from")
        else f"- Not trained further: the weights of `{summary['retuned_from']}` with a new operating point "
        "(`extortion-guard models retune`)"
        if summary.get("retuned_from")
        else f"- Fine-tuned further from our classifier `{summary['parent_version']}` (then at `{config.base}`)"
        if summary.get("parent_version")
        else f"- Base encoder: `{config.base}`",
        *([f"- A smaller student: {config.num_layers} of the base's encoder layers, evenly spaced"] if config.num_layers else []),
        *(
            [
                f"- Only the top {config.trained_layers} encoder layers and the head trained; "
                "the embeddings and the layers below kept their weights"
            ]
            if config.trained_layers
            else []
        ),
        *(
            [
                f"- Distilled from `{config.teacher}`: loss = {1 - config.distill_weight:g} × class-weighted cross-entropy + "
                f"{config.distill_weight:g} × KL divergence from the teacher's probabilities at temperature {config.distill_temperature:g}"
            ]
            if config.teacher
            else []
        ),
        f"- Device: {summary['device']}, precision {summary['precision']}; {summary['epochs_run']} epochs in {summary['train_seconds']} s "
        + (
            f"(early stopping on dev macro-F1, patience {config.early_stopping_patience}; "
            f"best dev macro-F1 {summary['best_dev_macro_f1']:.3f})"
            if config.epochs > 1
            else f"(dev macro-F1 {summary['best_dev_macro_f1']:.3f})"
        ),
        *([operating_point_line(config, summary)] if summary.get("extortion_logit_shift") is not None else []),
        f"- Weights: safetensors, stored as {config.save_dtype}, {size_mb:.1f} MB",
        "- Arguments: see `train_config.json`",
        "",
    ]
    if summary.get("eval_sets"):
        lines += [
            "## Headline: independent evaluation sets (never trained or tuned on)",
            "",
            "Written by people other than the corpus writers (`data/annotations/eval/README.md`). The frozen test split below was "
            "written by the corpus writers and reads higher than these.",
            "",
            "| set | n | macro-F1 | extortion precision | extortion recall | accuracy |",
            "|---|---|---|---|---|---|",
        ]
        for name, m in summary["eval_sets"].items():
            ext = m["per_class"]["extortion"]
            lines.append(
                f"| {name} | {m['n']} | {m['macro_f1']:.3f} | {ext['precision']:.3f} | {ext['recall']:.3f} | {m['accuracy']:.3f} |"
            )
        lines.append("")
    for split in ("test", "dev"):
        if split in summary:
            lines += [f"## {split.capitalize()} metrics", "", metrics_table(summary[split]), ""]
    if summary.get("challenges"):
        lines += ["## Challenge sets (never trained on)", "", "| set | n | macro-F1 | extortion F1 | accuracy |", "|---|---|---|---|---|"]
        for name, m in summary["challenges"].items():
            ext = m["per_class"]["extortion"]
            ext_f1 = f"{ext['f1']:.3f}" if ext["support"] else "— (none)"
            lines.append(f"| {name} | {m['n']} | {m['macro_f1']:.3f} | {ext_f1} | {m['accuracy']:.3f} |")
        lines += [
            "",
            "Macro-F1 averages over all four labels, so it is low by construction on sets that hold only some of them; "
            "read accuracy and extortion F1 there.",
            "",
        ]
    if summary.get("robustness"):
        from .robustness import robustness_table

        lines += ["## Robustness to evasion (test split)", "", robustness_table(summary["robustness"]), ""]
    if summary.get("external_extortion_rate"):
        lines += [
            "## Extortion rate on real text (held-out lines, none of it extortion)",
            "",
            "| source | lines | predicted extortion | rate |",
            "|---|---|---|---|",
        ]
        for name, r in summary["external_extortion_rate"].items():
            lines.append(f"| {name} | {r['n']} | {r['extortion']} | {100 * r['rate']:.2f}% |")
        total = sum(r["n"] for r in summary["external_extortion_rate"].values())
        flagged = sum(r["extortion"] for r in summary["external_extortion_rate"].values())
        lines += [f"| all | {total} | {flagged} | {100 * flagged / max(total, 1):.3f}% |", ""]
    lines += _flagged_appendix(summary.get("external_extortion_rate", {}))
    if config.card_notes:
        lines += [Path(config.card_notes).read_text(encoding="utf-8").strip(), ""]
    lines += [
        "## Limits",
        "",
        "Trained on hand-written messages, not on real platform logs; figures on real traffic will differ. "
        "Use the probabilities with the per-label thresholds in `eval/test/report.md`, and keep a human in the loop.",
        "",
        *framework_versions(),
    ]
    card = ModelCard(f"---\n{ModelCardData(**CARD_DATA).to_yaml()}\n---\n\n" + "\n".join(lines))
    card.save(out / "README.md")


def framework_versions() -> list[str]:
    """The versions this card's model was trained and evaluated with."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return ["## Framework versions", "", f"- Python {platform.python_version()}", *(f"- {p} {installed(p)}" for p in FRAMEWORKS), ""]


def _flagged_appendix(rates: dict) -> list[str]:
    """Every held-out real line predicted extortion, by source and line number (the text stays where it lives)."""
    flagged = [(name, line_id.rsplit(":", 1)[1]) for name, r in rates.items() for line_id in r.get("flagged", [])]
    if not flagged:
        return []
    lines = [
        "## Appendix: held-out real lines predicted extortion",
        "",
        "Source and line number in the source's file (`data/annotations/sources.json`); none of these lines is extortion.",
        "",
    ]
    for name in dict.fromkeys(n for n, _ in flagged):
        lines.append(f"- `{name}`: lines " + ", ".join(line for n, line in flagged if n == name))
    return [*lines, ""]


def operating_point_line(config, summary: dict) -> str:
    """How the extortion shift was chosen, and what it gives on the messages it was chosen on."""
    rule = config.tune_extortion_shift
    how = {
        "dev-macro-f1": "the shift in [0, 3] that maximises dev macro-F1",
        "tuning-macro-f1": "the shift in [0, 3] that maximises macro-F1 on the tuning sets",
        "tuning-precision": f"the smallest shift in [0, 3] whose extortion precision on the tuning sets reaches "
        f"{config.target_extortion_precision:g} (the highest macro-F1 where none does)",
    }.get(rule, rule)
    line = f"- Operating point: the extortion logit is lowered by {summary['extortion_logit_shift']:g}, {how}"
    if rule.startswith("tuning") and summary.get("tuning"):
        tuning = summary["tuning"]
        ext = tuning["per_class"]["extortion"]
        line += (
            f"; on the {tuning['n']} tuning messages (written independently of the corpus, by other writers than the evaluation "
            f"sets'): macro-F1 {tuning['macro_f1']:.3f}, extortion precision {ext['precision']:.3f}, recall {ext['recall']:.3f}"
        )
    return line
