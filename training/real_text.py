"""Score every line of the real text in ``sources.json`` and list the ones the model flags, for relabelling.

The list names each flagged line by source and line number, with the model's label and probabilities and
whether the line feeds training; it never copies the text, which stays where it lives. A reader looks each
flagged line up, and writes the lines that are wrong into ``relabels.jsonl`` (the weak label is kept otherwise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from model.labels import LABELS

from .sources import load_source, read_relabels, read_sources

FLAGGED_LABELS = ("extortion", "coercion")


def flag_real_text(
    classifier, sources_path: str, relabels_path: str | None, batch_size: int = 32, held_out_only: bool = False
) -> Iterator[dict]:
    """One record per source line (after the source's filters): source, line, split, weak label, predicted label, probabilities.

    ``held_out_only``: only the held-out lines that evaluation scores (the source's ``held_out_lines`` cap applies), the
    false-positive estimate's own lines; otherwise every line, including the training sample.
    """
    relabels = read_relabels(relabels_path) if relabels_path else {}
    for source in read_sources(sources_path):
        train, held_out = load_source(source if held_out_only else dataclasses.replace(source, held_out_lines=None), relabels)
        if held_out_only:
            train = []
        messages = train + held_out
        if not messages:
            continue
        probs = classifier.predict_proba(messages, batch_size=batch_size)
        for index, (message, row) in enumerate(zip(messages, probs, strict=True)):
            yield {
                "source": source.name,
                "line": int(message.id.rsplit(":", 1)[1]),
                "split": "train" if index < len(train) else "held-out",
                "label": message.label,
                "predicted": LABELS[int(row.argmax())],
                **{f"p_{label}": round(float(p), 4) for label, p in zip(LABELS, row, strict=True)},
            }
