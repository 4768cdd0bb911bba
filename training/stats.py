"""Corpus statistics: counts by label, source, tag, split, length band and domain."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from model.data_format import Message

LENGTH_BANDS = ((1, 5), (6, 20), (21, 60), (61, 120), (121, 300), (301, None))
BAND_NAMES = tuple(f"{low}-{high}" if high else f"{low}+" for low, high in LENGTH_BANDS)
OBVIOUS_WORDS = ("差评", "钱", "转账")


def length_band(text: str) -> str:
    """The name of the character-length band the text falls in."""
    return next(name for name, (_, high) in zip(BAND_NAMES, LENGTH_BANDS, strict=True) if high is None or len(text) <= high)


def _counts(values) -> dict[str, int]:
    return dict(sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0])))


def corpus_stats(messages: Sequence[Message], splits: Sequence[str] | None = None) -> dict:
    """Every count ``data stats`` prints, as a JSON-ready dict."""
    domains = [next((t.split(":", 1)[1] for t in m.tags if t.startswith("domain:")), "(none)") for m in messages]
    stats = {
        "messages": len(messages),
        "by_label": _counts(m.label or "(unlabelled)" for m in messages),
        "by_source": _counts(m.source or "(none)" for m in messages),
        "by_tag": _counts(t for m in messages for t in m.tags if not t.startswith("domain:")),
        "by_length": {band: 0 for band in BAND_NAMES} | Counter(length_band(m.text) for m in messages),
        "by_domain": _counts(domains),
        "domains": len(set(domains) - {"(none)"}),
        "with_context": sum(1 for m in messages if m.context),
        "extortion_without_obvious_words": sum(
            1 for m in messages if m.label == "extortion" and not any(w in m.text for w in OBVIOUS_WORDS)
        ),
    }
    if splits is not None:
        stats["by_split"] = {
            s: _counts(m.label for m, split in zip(messages, splits, strict=True) if split == s)
            for s in ("train", "dev", "test", "excluded")
        }
    return stats


def format_stats(stats: dict) -> str:
    """Plain-text tables for the terminal."""
    lines = [
        f"{stats['messages']} messages; {stats['with_context']} with context; {stats['domains']} domains; "
        f"{stats['extortion_without_obvious_words']} extortion messages without 差评/钱/转账"
    ]
    for key in ("by_label", "by_source", "by_tag", "by_length", "by_domain"):
        lines.append(f"\n{key.replace('by_', 'by ')}:")
        lines += [f"  {name:<24} {count:>6}" for name, count in stats[key].items()]
    if "by_split" in stats:
        lines.append("\nby split:")
        for split, labels in stats["by_split"].items():
            lines.append(f"  {split:<6} " + "  ".join(f"{label} {n}" for label, n in labels.items()) + f"  (total {sum(labels.values())})")
    return "\n".join(lines)
