"""The model card (README.md) written into every trained model folder."""

from __future__ import annotations

from pathlib import Path

from model.labels import LABELS

from .evaluate import metrics_table
from .training_args import TrainConfig

CARD_HEADER = """---
language: zh
license: mit
pipeline_tag: text-classification
library_name: transformers
tags: [extortion-guard, e-commerce, moderation]
---
"""


def write_model_card(out: Path, config: TrainConfig, summary: dict) -> None:
    """Fill in data, base, training arguments and evaluation results."""
    counts = summary["counts"]
    size_mb = sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2**20
    lines = [
        CARD_HEADER,
        f"# Extortion Guard classifier `{out.name}`",
        "",
        "Classifies one buyer–seller chat message, judged with the turns before it, as "
        + ", ".join(f"`{label}`" for label in LABELS)
        + " (see `data/annotations/GUIDELINES.md`). Message and context are encoded as a pair; "
        f"the window is {config.max_length} tokens and the context loses its oldest tokens first.",
        "",
        "```python",
        "from model import ExtortionClassifier",
        "clf = ExtortionClassifier.from_pretrained(\"path/to/this/folder\")  # no argument: the shipped default",
        'clf.predict({"text": "钱呢？", "context": [{"role": "buyer", "text": "给我转500，不然差评"}]})',
        "```",
        "",
        "It is also a standard `transformers` folder: `pipeline(\"text-classification\", model=...)` loads it (message only, no context).",
        "",
        "## Data",
        "",
        f"Labelled messages from {', '.join(f'`{p}`' for p in config.data)}, split by conversation group (hash of the id before `#`).",
        "",
        "| split | " + " | ".join(LABELS) + " | total |",
        "|---|" + "---|" * (len(LABELS) + 1),
    ]
    for split, by_label in counts.items():
        lines.append(f"| {split} | " + " | ".join(str(by_label[label]) for label in LABELS) + f" | {sum(by_label.values())} |")
    lines += [
        "",
        "## Training",
        "",
        f"- Base encoder: `{config.base}`",
        f"- Device: {summary['device']}, precision {summary['precision']}; {summary['epochs_run']} epochs in {summary['train_seconds']} s "
        f"(early stopping on dev macro-F1, patience {config.early_stopping_patience}; best dev macro-F1 {summary['best_dev_macro_f1']:.3f})",
        f"- Weights: safetensors, stored as {config.save_dtype}, {size_mb:.1f} MB",
        "- Arguments: see `train_config.json`",
        "",
    ]
    for split in ("test", "dev"):
        if split in summary:
            lines += [f"## {split.capitalize()} metrics", "", metrics_table(summary[split]), ""]
    lines += [
        "## Limits",
        "",
        "Trained on hand-written messages, not on real platform logs; figures on real traffic will differ. "
        "Use the probabilities with the per-label thresholds in `eval/test/report.md`, and keep a human in the loop.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
