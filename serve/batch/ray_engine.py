"""The same batch job on Ray Data, for inputs larger than one machine (``--engine ray``).

Ray reads the files (local paths, ``s3://`` or ``hdfs://`` through pyarrow's file systems),
each row is validated with the local engine's rules, rows are grouped by conversation
and each group ordered by time (then message id) to give every message its preceding
turns, and a pool of actors, each loading the model once, scores them. The results come
back to this machine, which writes the same outputs as the local engine.

Differences from the local engine: Ray's readers do not report row numbers, so error
rows carry the file and message id only; a file that is not well-formed (a broken JSON
line) fails the job rather than becoming error rows; there is no resumption.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from model.data_format import Message, Turn
from model.labels import LABELS

from .config import BatchConfig
from .outputs import PREDICTION_SCHEMA, finish_outputs
from .reader import ErrorRow, file_format, to_chat_row

ROWS_SCHEMA = pa.schema(
    [
        f
        for f in PREDICTION_SCHEMA
        if f.name in ("file", "row", "message_id", "conversation_id", "sender_id", "sender_role", "shop_id", "ts", "time", "text")
    ]
    + [("given_context", pa.string()), ("error", pa.string()), ("group", pa.string())]
)
SCORED_SCHEMA = PREDICTION_SCHEMA.append(pa.field("error", pa.string()))


def normalise(batch: pa.Table, columns: dict[str, str]) -> pa.Table:
    """Validate each row with the local engine's rules; invalid rows keep their reason in ``error``."""
    rows = []
    for record in batch.to_pylist():
        path = record.pop("path", None)
        row = to_chat_row(record, path, None, columns)
        if isinstance(row, ErrorRow):
            rows.append({"file": path, "message_id": row.message_id, "error": row.reason, "group": uuid.uuid4().hex})
            continue
        given = None if row.context is None else json.dumps([[t.role, t.text] for t in row.context], ensure_ascii=False)
        fields = {
            k: getattr(row, k)
            for k in ("file", "message_id", "conversation_id", "sender_id", "sender_role", "shop_id", "ts", "time", "text")
        }
        rows.append(fields | {"given_context": given, "group": row.conversation_id or uuid.uuid4().hex})
    return pa.Table.from_pylist(rows, schema=ROWS_SCHEMA)


def add_context(group: pa.Table, turns: int) -> pa.Table:
    """Each message's preceding turns in its conversation (by time, then message id), as JSON."""
    rows = sorted(group.to_pylist(), key=lambda r: (r["time"] is None, r["time"] or 0, r["message_id"] or ""))
    history: list[list] = []
    for row in rows:
        if row["error"] is not None:
            row["context"] = None
            continue
        if row["given_context"] is not None:
            row["context"] = json.dumps(json.loads(row["given_context"])[-turns:] if turns else [], ensure_ascii=False)
        else:
            row["context"] = json.dumps(history[-turns:] if turns else [], ensure_ascii=False)
            history.append([row["sender_role"], row["text"]])
    return pa.Table.from_pylist(rows, schema=ROWS_SCHEMA.append(pa.field("context", pa.string())))


class RayScorer:
    """A Ray actor: loads the model once, then scores batches of rows."""

    def __init__(self, model: str | None, device: str, precision: str, batch_size: int):
        from model.classifier import ExtortionClassifier

        self.classifier = ExtortionClassifier.from_pretrained(model, device=device, precision=precision)
        self.batch_size = batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        valid = [r for r in rows if r["error"] is None]
        messages = [
            Message(r["text"], tuple(Turn(role, text) for role, text in json.loads(r["context"])), r["message_id"], r["sender_role"])
            for r in valid
        ]
        probs, truncated = self.classifier.score(messages, self.batch_size) if valid else (None, [])
        for i, row in enumerate(valid):
            row.update({f"p_{label}": float(probs[i, j]) for j, label in enumerate(LABELS)})
            row.update(label=LABELS[int(probs[i].argmax())], truncated=truncated[i], model_version=self.classifier.version)
        return pa.Table.from_pylist(rows, schema=SCORED_SCHEMA)


def read_dataset(files: list[str]):
    """One Ray dataset over all inputs, each row with the path it came from."""
    import ray.data

    readers = {"jsonl": ray.data.read_json, "csv": ray.data.read_csv, "parquet": ray.data.read_parquet}
    datasets = []
    for fmt in ("jsonl", "csv", "parquet"):
        paths = [f for f in files if file_format(Path(f)) == fmt]
        if paths:
            datasets.append(readers[fmt](paths, include_paths=True))
    if not datasets:
        raise ValueError("no .jsonl, .csv or .parquet inputs for Ray")
    return datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]


def ray_input_files(inputs: list[str]) -> list[str]:
    """Local files and folders are expanded as for the local engine; remote URIs pass through to Ray."""
    from .reader import input_files

    local = [p for p in inputs if "://" not in p]
    return [str(p) for p in input_files(local)] + [p for p in inputs if "://" in p]


def run_ray(config: BatchConfig) -> dict:
    import ray

    started = time.time()
    if not ray.is_initialized():
        ray.init(address=config.ray_address, log_to_driver=False, include_dashboard=False)
    files = ray_input_files(config.inputs)
    refuse_multi_node_cluster(sum(1 for node in ray.nodes() if node.get("Alive")))
    out = Path(config.output)
    run_info = describe_run(config)
    staging = out / "_ray"
    shutil.rmtree(staging, ignore_errors=True)
    scored = (
        read_dataset(files)
        .map_batches(normalise, fn_kwargs={"columns": config.columns}, batch_format="pyarrow")
        .groupby("group")
        .map_groups(add_context, fn_kwargs={"turns": config.context_turns}, batch_format="pyarrow")
        .map_batches(
            RayScorer,
            fn_constructor_kwargs={
                "model": config.model,
                "device": config.device,
                "precision": config.precision,
                "batch_size": config.batch_size,
            },
            batch_format="pyarrow",
            batch_size=config.chunk_rows,
            concurrency=config.ray_concurrency,
            num_gpus=config.ray_num_gpus or None,
        )
    )
    scored.write_parquet(str(staging))
    parts = out / "_parts"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    table = pq.read_table(staging, schema=SCORED_SCHEMA).sort_by(
        [("file", "ascending"), ("time", "ascending"), ("message_id", "ascending")]
    )
    failed = table.filter(table["error"].is_valid())
    pq.write_table(table.filter(table["error"].is_null()).drop_columns(["error"]), parts / "part-000000.parquet")
    errors = [ErrorRow(r["file"], None, r["error"], r["message_id"]).to_json() for r in failed.to_pylist()]
    (parts / "part-000000.errors.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors), encoding="utf-8")
    job = {"settings": config.job_settings(), "files": files}
    summary = finish_outputs(out, parts, [Path(f) for f in files], run_info, job, started)
    shutil.rmtree(parts)
    shutil.rmtree(staging)
    return summary


def refuse_multi_node_cluster(alive_nodes: int) -> None:
    """The scored rows are staged under the output folder by whichever node scored them; on more than one node each
    node's share would land on its own disk and this machine would read only its own, so such runs are refused."""
    if alive_nodes > 1:
        raise ValueError(
            f"the Ray cluster has {alive_nodes} nodes; this engine stages its rows on the local disk and "
            "runs on one node only (use a one-node cluster, or the local engine with --workers)"
        )


def describe_run(config: BatchConfig) -> dict:
    """Model version, precision and device of the actors, for the summary."""
    from model.classifier import model_version, resolve_device, resolve_precision

    version = model_version(config.model)
    if config.ray_num_gpus:  # the GPUs are the workers'; the driver may have none
        precision = "auto (each GPU worker picks)" if config.precision == "auto" else config.precision
        return {"model_version": version, "precision": precision, "device": "cuda (Ray workers)", "engine": "ray"}
    device = resolve_device(config.device)
    return {"model_version": version, "precision": resolve_precision(config.precision, device), "device": str(device), "engine": "ray"}
