"""``report.html``: one self-contained page (charts inlined as PNG) that opens without a server."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pyarrow as pa

from model.files import write_text_atomically
from model.labels import LABELS

from .rollups import HISTOGRAM_EDGES, Rollups

TOP = 100


def _chart(draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.2))
    draw(axes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _histograms(rollups: Rollups) -> str:
    def draw(axes):
        edges = HISTOGRAM_EDGES
        for label, counts in rollups.histograms.items():
            # Counts made batch by batch, drawn as the histogram of the bin starts weighted by their counts.
            # A log axis needs a positive count: with no predictions (every row an error) it stays linear.
            axes.hist(edges[:-1], bins=edges, weights=counts, alpha=0.6, label=label, log=bool(sum(counts)))
        axes.set_xlabel("probability")
        axes.set_ylabel("messages (log)")
        axes.legend()

    return _chart(draw)


def _per_day(rollups: Rollups) -> str:
    counts = rollups.labels_per_day().to_pylist()
    if not counts:
        return "<p>No message carries a readable time.</p>"
    days = sorted({c["day"] for c in counts})
    by = {(c["day"], c["label"]): c["label_count"] for c in counts}
    rows = [[day] + [by.get((day, label), 0) for label in LABELS] for day in days]

    def draw(axes):
        bottom = [0] * len(days)
        for i, label in enumerate(LABELS):
            values = [row[i + 1] for row in rows]
            axes.bar(days, values, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        axes.set_ylabel("messages")
        axes.legend(fontsize=7)
        axes.tick_params(axis="x", labelrotation=45, labelsize=7)

    return _chart(draw) + _table(["day", *LABELS], rows)


def _table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else html.escape("" if value is None else str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


TOP_COLUMNS = {
    "conversations": [
        "conversation_id",
        "top_label",
        "max_p_extortion",
        "messages",
        "trigger_message_id",
        "shop_id",
        "first_time",
        "last_time",
    ],
    "senders": [
        "sender_id",
        "shops_with_threats",
        "extortion_messages",
        "coercion_messages",
        "max_p_extortion",
        "first_threat_time",
        "last_threat_time",
    ],
}


def _top(table: pa.Table, columns: list[str]) -> str:
    top = table.slice(0, TOP).select(columns).to_pylist()
    return _table(columns, [[row[c] for c in columns] for row in top])


def write_report(out: Path, rollups: Rollups, tables: dict[str, pa.Table], summary: dict) -> None:
    counts = "".join(f"<li>{label}: {summary['label_counts'][label]:,}</li>" for label in LABELS)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Extortion Guard batch report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}th{{background:#eee}}</style></head><body>
<h1>Extortion Guard batch report</h1>
<p>Model {html.escape(str(summary["model_version"]))}; {summary["rows_in"]:,} rows in: {summary["predictions"]:,} scored,
{summary["errors"]:,} errors (see errors.jsonl); {summary["seconds"]} s.</p>
<ul>{counts}</ul>
<h2>Scores</h2>{_histograms(rollups)}
<h2>Labels per day</h2>{_per_day(rollups)}
<h2>Top {TOP} conversations by extortion probability</h2>
{_top(tables["conversations"], TOP_COLUMNS["conversations"])}
<h2>Top {TOP} senders by shops threatened</h2>
{_top(tables["senders"], TOP_COLUMNS["senders"])}
</body></html>
"""
    write_text_atomically(out / "report.html", page)
