"""The final outputs of a batch job: predictions, errors, roll-ups, summary and report.

Each is written under a temporary name and renamed, so a final name never holds a partial file.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from model.files import atomic_write, write_text_atomically
from model.labels import LABELS

from .rollups import Rollups

PREDICTION_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("row", pa.int64()),
        ("message_id", pa.string()),
        ("conversation_id", pa.string()),
        ("sender_id", pa.string()),
        ("sender_role", pa.string()),
        ("shop_id", pa.string()),
        ("order_id", pa.string()),
        ("order_account_id", pa.string()),
        ("ts", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("text", pa.string()),
        ("label", pa.string()),
        *[(f"p_{label}", pa.float32()) for label in LABELS],
        ("truncated", pa.bool_()),
        ("model_version", pa.string()),
    ]
)


def concatenate_parts(parts: Path, out: Path) -> tuple[int, Counter]:
    """Stream the parts into ``predictions.parquet`` and ``errors.jsonl``; return rows scored and error reasons."""
    scored = 0
    with atomic_write(out / "predictions.parquet") as tmp, pq.ParquetWriter(tmp, PREDICTION_SCHEMA) as writer:
        for part in sorted(parts.glob("part-*.parquet")):
            table = pq.read_table(part, schema=PREDICTION_SCHEMA)
            writer.write_table(table)
            scored += table.num_rows
    reasons: Counter = Counter()
    with atomic_write(out / "errors.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as errors:
        for part in sorted(parts.glob("part-*.errors.jsonl")):
            for line in part.read_text(encoding="utf-8").splitlines():
                errors.write(line + "\n")
                reasons[_reason_kind(json.loads(line)["reason"])] += 1
    return scored, reasons


def _reason_kind(reason: str) -> str:
    """The reason without its specifics (column numbers, counts), for the summary's tally."""
    return reason.split(":")[0].split(",")[0][:60]


def write_rollups(out: Path, tables: dict[str, pa.Table]) -> None:
    for name, table in tables.items():
        with atomic_write(out / f"{name}.parquet") as tmp:
            pq.write_table(table, tmp)


def finish_outputs(
    out: Path, parts: Path, files: list[Path], run_info: dict, job: dict, started: float, stages: dict | None = None
) -> dict:
    """Predictions, errors, roll-ups, report and (last, as the mark of a finished job) the summary.

    ``run_info`` names the model version, precision, device and engine; ``job`` identifies the job;
    ``stages`` gives seconds by stage (reading, tokenising, model, writing), where the engine measured them.
    """
    from .report import write_report

    finishing = time.perf_counter()
    scored, reasons = concatenate_parts(parts, out)
    rollups = Rollups.of_file(out / "predictions.parquet")  # batch by batch: memory stays flat as the input grows
    tables = rollups.tables()
    write_rollups(out, tables)
    errors = sum(reasons.values())
    seconds = time.time() - started
    summary = {
        "rows_in": scored + errors,
        "predictions": scored,
        "errors": errors,
        "error_reasons": dict(reasons.most_common()),
        "label_counts": {label: rollups.label_counts[label] for label in LABELS},
        "conversations": tables["conversations"].num_rows,
        "senders": tables["senders"].num_rows,
        "shops": tables["shops"].num_rows,
        "files": [str(p) for p in files],
        **run_info,
        "seconds": round(seconds, 2),
        "messages_per_second": round((scored + errors) / seconds, 1) if seconds else None,
        "seconds_by_stage": {stage: round(value, 2) for stage, value in (stages or {}).items()},  # "finish" added below
        "job": job,
    }
    write_report(out, rollups, tables, summary)
    summary["seconds_by_stage"]["finish"] = round(time.perf_counter() - finishing, 2)
    write_text_atomically(out / "summary.json", json.dumps(summary, indent=1, ensure_ascii=False, default=str))
    return summary
