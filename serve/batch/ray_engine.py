"""The same batch job on Ray Data, for inputs larger than one machine (``--engine ray``).

Ray reads the files (local paths, ``s3://`` or ``hdfs://`` through pyarrow's file systems),
each row is validated with the local engine's rules, rows are grouped by conversation
and each group ordered by time (then message id) to give every message its preceding
turns, and a pool of actors, each loading the model once, scores them. The scored rows
are sorted and written by the workers themselves under ``--output/_ray``, so ``--output``
must be a location every node reaches (checked before any work). This machine then
streams those files, one record batch at a time, into the local engine's outputs.

Differences from the local engine: Ray's readers do not report row numbers, so error
rows carry the file and message id only, and rows are listed by file, time and message id
rather than by row; a file that is not well-formed (a broken JSON line) fails the job
rather than becoming error rows; there is no resumption.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from model.data_format import Message, Turn
from model.labels import LABELS

from .config import BatchConfig
from .outputs import PREDICTION_SCHEMA, finish_outputs
from .reader import KEYS, ErrorRow, file_format, to_chat_row

ROWS_SCHEMA = pa.schema(
    [f for f in PREDICTION_SCHEMA if f.name in ("file", "row", *KEYS, "ts", "time", "text")]
    + [("given_context", pa.string()), ("error", pa.string()), ("group", pa.string())]
)
SCORED_SCHEMA = PREDICTION_SCHEMA.append(pa.field("error", pa.string()))
ORDER = "order"  # file, time (missing last), message id: the order of the outputs, as one sortable string
STAGED_SCHEMA = SCORED_SCHEMA.append(pa.field(ORDER, pa.string()))


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
        fields = {k: getattr(row, k) for k in ("file", *KEYS, "ts", "time", "text")}
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

    def __init__(self, model: str | None, device: str, precision: str, batch_size: int, cascade: str = "auto"):
        from model.classifier import ExtortionClassifier

        from .engine import with_first_stage

        self.classifier = with_first_stage(ExtortionClassifier.from_pretrained(model, device=device, precision=precision), cascade)
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
        for row in rows:
            when = row["time"].isoformat(timespec="microseconds") if row["time"] else "~"  # "~" sorts after every date
            row[ORDER] = "\x1f".join((row["file"] or "", when, row["message_id"] or ""))
        return pa.Table.from_pylist(rows, schema=STAGED_SCHEMA)


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
    run_info = describe_run(config)
    output = OutputLocation(config.output)
    staging = output.child("_ray")
    output.filesystem.create_dir(output.path, recursive=True)
    refuse_unreachable_output(output)
    output.filesystem.delete_dir_contents(staging.path, missing_dir_ok=True)
    scored_dataset(files, config).write_parquet(staging.path, filesystem=staging.filesystem)
    with tempfile.TemporaryDirectory(prefix="eg-ray-") as scratch:
        # The final outputs are built here from the staged files, one batch at a time, then put in place.
        out = Path(config.output) if output.is_local else Path(scratch) / "out"
        parts = out / "_parts"
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
        write_parts(staging, parts, config.chunk_rows)
        job = {"settings": config.job_settings(), "files": files}
        summary = finish_outputs(out, parts, [Path(f) for f in files], run_info, job, started)
        shutil.rmtree(parts)
        if not output.is_local:
            output.upload(out)
    if staging.filesystem.get_file_info(staging.path).type == pafs.FileType.Directory:  # Ray writes no folder for no rows
        staging.filesystem.delete_dir(staging.path)
    return summary


def scored_dataset(files: list[str], config: BatchConfig):
    """Rows read, validated, given their turns, scored, and sorted in the order the outputs list them."""
    import ray.data

    return (
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
                "cascade": config.cascade,
            },
            batch_format="pyarrow",
            batch_size=config.chunk_rows,
            compute=ray.data.ActorPoolStrategy(size=config.ray_concurrency),
            num_gpus=config.ray_num_gpus or None,
        )
        .sort(ORDER)
    )


def write_parts(staging: OutputLocation, parts: Path, batch_rows: int) -> None:
    """The staged files as the local engine's parts, in sort order, one record batch in memory at a time.

    The dataset was sorted before it was written, so each staged file holds one run of the order; the files are put
    in order by their first key."""
    staged = []
    for info in staging.filesystem.get_file_info(pafs.FileSelector(staging.path, allow_not_found=True)):  # none: no rows
        if info.is_file and info.path.endswith(".parquet"):
            with staging.filesystem.open_input_file(info.path) as f:
                parquet = pq.ParquetFile(f)
                if parquet.metadata.num_rows:
                    staged.append((parquet.read_row_group(0, columns=[ORDER]).column(ORDER)[0].as_py(), info.path))
    number = 0
    for _, path in sorted(staged):
        with staging.filesystem.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
                table = pa.Table.from_batches([batch]).select(SCORED_SCHEMA.names).cast(SCORED_SCHEMA)
                failed = table.filter(table["error"].is_valid())
                pq.write_table(table.filter(table["error"].is_null()).drop_columns(["error"]), parts / f"part-{number:06d}.parquet")
                errors = [ErrorRow(r["file"], None, r["error"], r["message_id"]).to_json() for r in failed.to_pylist()]
                text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors)
                (parts / f"part-{number:06d}.errors.jsonl").write_text(text, encoding="utf-8")
                number += 1


class OutputLocation:
    """``--output`` as pyarrow sees it: a local folder, or a URI (``s3://``, ``hdfs://``, ``gs://``, ``file://``)."""

    def __init__(self, output: str):
        self.output = output
        self.is_local = "://" not in output
        if self.is_local:
            self.filesystem, self.path = pafs.LocalFileSystem(), str(Path(output).resolve())
        else:
            self.filesystem, self.path = pafs.FileSystem.from_uri(output)

    def child(self, name: str) -> OutputLocation:
        return OutputLocation(f"{self.output.rstrip('/')}/{name}")

    def uri(self) -> str:
        """What every node opens: the absolute path, or the URI as given."""
        return self.path if self.is_local else self.output

    def upload(self, folder: Path) -> None:
        """The finished outputs, summary last: its presence marks a finished job."""
        for local in sorted(folder.iterdir(), key=lambda p: p.name == "summary.json"):
            if local.is_file():
                pafs.copy_files(str(local), f"{self.path}/{local.name}", destination_filesystem=self.filesystem)


def refuse_unreachable_output(output: OutputLocation) -> None:
    """Every node writes its share of the scored rows under ``--output``, so every node must see the same folder: a
    probe file written here must be visible from each node. A node-local path on a cluster of several nodes fails
    this, before any work."""
    probe = output.child(f"_probe-{uuid.uuid4().hex}")
    with probe.filesystem.open_output_stream(probe.path) as f:
        f.write(b"probe")
    try:
        blind = nodes_not_seeing(probe.uri())
    finally:
        probe.filesystem.delete_file(probe.path)
    if blind:
        raise ValueError(
            f"--output {output.output}: {len(blind)} Ray node(s) cannot see this folder ({', '.join(n[:8] for n in blind)}); "
            "on a cluster of several nodes give a location every node reaches (s3://, hdfs://, or a shared mount)"
        )


def nodes_not_seeing(uri: str) -> list[str]:
    """Ids of the live Ray nodes on which ``uri`` does not exist (one tiny task pinned to each node)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
    check = ray.remote(num_cpus=0)(_exists)
    found = ray.get([check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(uri) for n in nodes])
    return [node for node, seen in zip(nodes, found, strict=True) if not seen]


def _exists(uri: str) -> bool:
    location = OutputLocation(uri)
    return location.filesystem.get_file_info(location.path).type != pafs.FileType.NotFound


def describe_run(config: BatchConfig) -> dict:
    """Model version, precision and device of the actors, for the summary."""
    from model.classifier import model_version, resolve_device, resolve_precision

    version = model_version(config.model)
    if config.ray_num_gpus:  # the GPUs are the workers'; the driver may have none
        precision = "auto (each GPU worker picks)" if config.precision == "auto" else config.precision
        return {"model_version": version, "precision": precision, "device": "cuda (Ray workers)", "engine": "ray"}
    device = resolve_device(config.device)
    return {"model_version": version, "precision": resolve_precision(config.precision, device), "device": str(device), "engine": "ray"}
