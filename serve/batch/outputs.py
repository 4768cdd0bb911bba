"""The final outputs of a batch job: predictions, errors, roll-ups, summary and report.

Each is written under a temporary name and renamed, so a final name never holds a partial file.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from model.labels import LABELS

PREDICTION_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("row", pa.int64()),
        ("message_id", pa.string()),
        ("conversation_id", pa.string()),
        ("sender_id", pa.string()),
        ("sender_role", pa.string()),
        ("shop_id", pa.string()),
        ("ts", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("text", pa.string()),
        ("label", pa.string()),
        *[(f"p_{label}", pa.float32()) for label in LABELS],
        ("truncated", pa.bool_()),
        ("model_version", pa.string()),
    ]
)
THREATS = ("extortion", "coercion")  # the labels that make a conversation, sender or shop worth a look


def concatenate_parts(parts: Path, out: Path) -> tuple[int, Counter]:
    """Stream the parts into ``predictions.parquet`` and ``errors.jsonl``; return rows scored and error reasons."""
    tmp = out / ".predictions.parquet.tmp"
    scored = 0
    with pq.ParquetWriter(tmp, PREDICTION_SCHEMA) as writer:
        for part in sorted(parts.glob("part-*.parquet")):
            table = pq.read_table(part, schema=PREDICTION_SCHEMA)
            writer.write_table(table)
            scored += table.num_rows
    os.replace(tmp, out / "predictions.parquet")
    reasons: Counter = Counter()
    tmp = out / ".errors.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as errors:
        for part in sorted(parts.glob("part-*.errors.jsonl")):
            for line in part.read_text(encoding="utf-8").splitlines():
                errors.write(line + "\n")
                reasons[_reason_kind(json.loads(line)["reason"])] += 1
    os.replace(tmp, out / "errors.jsonl")
    return scored, reasons


def _reason_kind(reason: str) -> str:
    """The reason without its specifics (column numbers, counts), for the summary's tally."""
    return reason.split(":")[0].split(",")[0][:60]


def rollups(predictions: pa.Table) -> dict[str, pa.Table]:
    """Per conversation, per sender and per shop, from the prediction columns (no text)."""
    table = predictions.append_column("threat", pc.is_in(predictions["label"], pa.array(THREATS)))
    table = table.append_column("is_extortion", pc.equal(table["label"], "extortion"))
    table = table.append_column("is_coercion", pc.equal(table["label"], "coercion"))
    return {"conversations": _by_conversation(table), "senders": _by_sender(table), "shops": _by_shop(table)}


def _by_conversation(table: pa.Table) -> pa.Table:
    table = table.filter(pc.is_valid(table["conversation_id"]))
    # The triggering message is the one with the highest extortion probability: sort, then take each group's first.
    ordered = table.sort_by([("conversation_id", "ascending"), ("p_extortion", "descending"), ("row", "ascending")])
    grouped = ordered.group_by("conversation_id", use_threads=False).aggregate(
        [
            ("message_id", "count"),
            ("p_extortion", "max"),
            ("message_id", "first"),
            ("file", "first"),
            ("row", "first"),
            ("label", "first"),
            ("shop_id", "first"),
            ("is_extortion", "sum"),
            ("is_coercion", "sum"),
            ("time", "min"),
            ("time", "max"),
        ]
    )
    grouped = grouped.rename_columns(
        ["conversation_id", "messages", "max_p_extortion", "trigger_message_id", "trigger_file", "trigger_row", "trigger_label",
         "shop_id", "extortion_messages", "coercion_messages", "first_time", "last_time"]
    )
    top = pc.if_else(pc.greater(grouped["extortion_messages"], 0), "extortion",
                     pc.if_else(pc.greater(grouped["coercion_messages"], 0), "coercion", grouped["trigger_label"]))
    grouped = grouped.append_column("top_label", top)
    return grouped.sort_by([("max_p_extortion", "descending"), ("conversation_id", "ascending")])


def _by_sender(table: pa.Table) -> pa.Table:
    table = table.filter(pc.is_valid(table["sender_id"]))
    totals = table.group_by("sender_id").aggregate(
        [("message_id", "count"), ("is_extortion", "sum"), ("is_coercion", "sum"), ("p_extortion", "max"), ("time", "min"), ("time", "max")]
    ).rename_columns(["sender_id", "messages", "extortion_messages", "coercion_messages", "max_p_extortion", "first_time", "last_time"])
    threats = table.filter(table["threat"])
    shops = threats.group_by("sender_id").aggregate([("shop_id", "count_distinct"), ("time", "min"), ("time", "max")]).rename_columns(
        ["sender_id", "shops_with_threats", "first_threat_time", "last_threat_time"]
    )
    joined = totals.join(shops, "sender_id", join_type="left outer")
    joined = joined.set_column(joined.schema.get_field_index("shops_with_threats"), "shops_with_threats", pc.fill_null(joined["shops_with_threats"], 0))
    return joined.sort_by([("shops_with_threats", "descending"), ("extortion_messages", "descending"), ("sender_id", "ascending")])


def _by_shop(table: pa.Table) -> pa.Table:
    table = table.filter(pc.is_valid(table["shop_id"]))
    totals = table.group_by("shop_id").aggregate(
        [("message_id", "count"), ("is_extortion", "sum"), ("is_coercion", "sum"), ("p_extortion", "max")]
    ).rename_columns(["shop_id", "messages", "extortion_messages", "coercion_messages", "max_p_extortion"])
    threats = table.filter(table["threat"])
    senders = threats.group_by("shop_id").aggregate([("sender_id", "count_distinct"), ("conversation_id", "count_distinct")]).rename_columns(
        ["shop_id", "threatening_senders", "threatening_conversations"]
    )
    joined = totals.join(senders, "shop_id", join_type="left outer")
    for name in ("threatening_senders", "threatening_conversations"):
        joined = joined.set_column(joined.schema.get_field_index(name), name, pc.fill_null(joined[name], 0))
    return joined.sort_by([("extortion_messages", "descending"), ("shop_id", "ascending")])


def write_rollups(out: Path, predictions: pa.Table) -> dict[str, pa.Table]:
    tables = rollups(predictions)
    for name, table in tables.items():
        tmp = out / f".{name}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, out / f"{name}.parquet")
    return tables


def finish_outputs(out: Path, parts: Path, files: list[Path], run_info: dict, job: dict, started: float, stages: dict | None = None) -> dict:
    """Predictions, errors, roll-ups, report and (last, as the mark of a finished job) the summary.

    ``run_info`` names the model version, precision, device and engine; ``job`` identifies the job;
    ``stages`` gives seconds by stage (reading, tokenising, model, writing), where the engine measured them.
    """
    from .report import write_report

    finishing = time.perf_counter()
    scored, reasons = concatenate_parts(parts, out)
    columns = [f.name for f in PREDICTION_SCHEMA if f.name != "text"]
    predictions = pq.read_table(out / "predictions.parquet", columns=columns)
    tables = write_rollups(out, predictions)
    errors = sum(reasons.values())
    seconds = time.time() - started
    summary = {
        "rows_in": scored + errors,
        "predictions": scored,
        "errors": errors,
        "error_reasons": dict(reasons.most_common()),
        "label_counts": {label: int(pc.sum(pc.equal(predictions["label"], label)).as_py() or 0) for label in LABELS},
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
    write_report(out, predictions, tables, summary)
    summary["seconds_by_stage"]["finish"] = round(time.perf_counter() - finishing, 2)
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, ensure_ascii=False, default=str))
    os.replace(tmp, out / "summary.json")
    return summary
