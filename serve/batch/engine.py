"""The local batch engine: stream rows in chunks, score each chunk, keep it as a part, then write the outputs.

Input order: rows are read file by file, in the order the files are given (folders
sorted by name), each file top to bottom. The context of a message is the turns of
its conversation that came before it *in that order*, so a chat log must list each
conversation's messages oldest first; conversations may interleave. The engine does
not sort, which keeps memory flat: it holds only the last ``context_turns`` turns of
up to ``max_open_conversations`` recent conversations.

Resumption: chunk *k* is scored and written to ``_parts/part-k.parquet`` (through a
temporary name and a rename) with its error rows. A rerun of the same command reads
the input again to rebuild the context but scores only the chunks with no part yet,
so the final outputs equal those of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.data_format import Message, Turn
from model.files import atomic_write, write_text_atomically
from model.labels import LABELS

from .config import BatchConfig
from .outputs import PREDICTION_SCHEMA, finish_outputs
from .reader import KEYS, ChatRow, ErrorRow, count_rows, input_files, read_file

log = logging.getLogger(__name__)

PARTS = "_parts"


class JobMismatch(ValueError):
    """The output folder holds the unfinished parts of a different job."""


class ContextTracker:
    """The last few turns of each recently active conversation; the least recently active is forgotten first."""

    def __init__(self, turns: int, max_conversations: int):
        self.turns = turns
        self.max_conversations = max_conversations
        # Tuples, not deques: a deque takes 760 bytes however short, 150 MB at 200,000 open conversations.
        self._history: OrderedDict[str, tuple[Turn, ...]] = OrderedDict()

    def context_for(self, row: ChatRow) -> tuple[Turn, ...]:
        if row.context is not None:  # the row brought its own turns
            return row.context[-self.turns :] if self.turns else ()
        if row.conversation_id is None or row.conversation_id not in self._history:
            return ()
        return self._history[row.conversation_id]

    def add(self, row: ChatRow) -> None:
        if row.conversation_id is None or self.turns == 0:
            return
        history = self._history.pop(row.conversation_id, ())
        self._history[row.conversation_id] = (*history, Turn(row.sender_role, row.text))[-self.turns :]
        if len(self._history) > self.max_conversations:
            self._history.popitem(last=False)


def rows_with_context(files: list[Path], config: BatchConfig) -> Iterator[tuple[ChatRow | ErrorRow, tuple[Turn, ...]]]:
    """Every row of every file, in input order, with the turns before it in its conversation."""
    tracker = ContextTracker(config.context_turns, config.max_open_conversations)
    for path in files:
        for row in read_file(path, config.columns):
            if isinstance(row, ErrorRow):
                yield row, ()
                continue
            yield row, tracker.context_for(row)
            tracker.add(row)


def chunked(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# One classifier per scoring process, loaded once by the pool's initializer.
_worker_classifier = None


def _load_worker(model: str | None, device: str, precision: str, threads: int, cascade: str) -> None:
    global _worker_classifier
    import torch

    from model.classifier import ExtortionClassifier

    torch.set_num_threads(threads)
    _worker_classifier = with_first_stage(ExtortionClassifier.from_pretrained(model, device=device, precision=precision), cascade)


def with_first_stage(classifier, cascade: str):
    """``classifier`` behind the first stage saved beside its weights, as ``--cascade`` asks, or as it is."""
    from model.first_stage import CascadeClassifier, first_stage_for

    stage = first_stage_for(classifier.model.name_or_path, cascade)
    return classifier if stage is None else CascadeClassifier(classifier, stage)


def _score_in_worker(messages: list[Message], batch_size: int) -> tuple[np.ndarray, list[bool], dict]:
    timings: dict = {}
    probs, truncated = _worker_classifier.score(messages, batch_size, timings)
    return probs, truncated, timings


def prediction_table(rows: list[ChatRow], probs: np.ndarray, truncated: list[bool], version: str) -> pa.Table:
    """Input keys, label, per-label probabilities and model version for scored rows."""
    columns = {
        "file": [r.file for r in rows],
        "row": [r.row for r in rows],
        **{field: [getattr(r, field) for r in rows] for field in (*KEYS, "ts", "time")},
        "text": [r.text for r in rows],
        "label": [LABELS[i] for i in probs.argmax(axis=1)] if len(rows) else [],
        **{f"p_{label}": probs[:, i] for i, label in enumerate(LABELS)},
        "truncated": truncated,
        "model_version": [version] * len(rows),
    }
    return pa.table(columns, schema=PREDICTION_SCHEMA)


class Scorer:
    """Scores chunks in this process, or in a pool of worker processes with a bounded number of chunks in flight."""

    def __init__(self, config: BatchConfig, classifier=None):
        import torch

        from model.classifier import ExtortionClassifier, model_version, resolve_device, resolve_precision

        self.config = config
        self.pool = None
        self.classifier = classifier
        if config.workers > 1:
            threads = max(1, (os.cpu_count() or 1) // config.workers)
            self.pool = ProcessPoolExecutor(
                config.workers, initializer=_load_worker, initargs=(config.model, config.device, config.precision, threads, config.cascade)
            )
        device = resolve_device(config.device)
        self.device = str(device)
        if self.pool is not None:  # the workers score; the parent needs only the model's name
            self.version = model_version(config.model)
            self.precision = resolve_precision(config.precision, device)
            return
        if device.type == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        if self.classifier is None and config.precision == "auto":  # measured: the fastest path for full batches
            from model.runtime import choose_runtime

            self.classifier = ExtortionClassifier.from_pretrained(config.model, device=config.device, precision="fp32")
            self.precision = choose_runtime(self.classifier, "batch").path.name
        else:
            if self.classifier is None:
                self.classifier = ExtortionClassifier.from_pretrained(config.model, device=config.device, precision=config.precision)
            self.precision = self.classifier.precision
        self.classifier = with_first_stage(self.classifier, config.cascade)
        self.version = self.classifier.version

    def submit(self, messages: list[Message]):
        if self.pool is not None:
            return self.pool.submit(_score_in_worker, messages, self.config.batch_size)
        timings: dict = {}
        probs, truncated = self.classifier.score(messages, self.config.batch_size, timings)
        return probs, truncated, timings

    def result(self, pending, stages: Counter) -> tuple[np.ndarray, list[bool]]:
        """The scores of a submitted chunk; adds its tokenising and model seconds (summed over workers) to ``stages``."""
        probs, truncated, timings = pending if isinstance(pending, tuple) else pending.result()
        stages.update(timings)
        return probs, truncated

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def job_fingerprint(config: BatchConfig, files: list[Path], version: str) -> dict:
    """What identifies a job: its settings, the model, and each input file's size and modification time."""
    stats = [{"path": str(p), "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files]
    return {"settings": config.job_settings(), "model_version": version, "files": stats}


def prepare_parts(parts: Path, fingerprint: dict, restart: bool) -> None:
    """Create the parts folder for this job, or check that the one there belongs to it."""
    job_file = parts / "job.json"
    if job_file.exists():
        if json.loads(job_file.read_text()) == fingerprint:
            return
        if not restart:
            raise JobMismatch(
                f"{parts.parent} holds the unfinished parts of a different job (other inputs, settings or model); "
                "rerun with --restart to discard them, or choose another --output"
            )
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    write_text_atomically(job_file, json.dumps(fingerprint, indent=1))


def write_part(parts: Path, index: int, table: pa.Table, errors: list[ErrorRow]) -> None:
    """Errors first, predictions last: a part counts as done once its predictions file exists."""
    error_lines = "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in errors)
    write_text_atomically(parts / f"part-{index:06d}.errors.jsonl", error_lines)
    with atomic_write(parts / f"part-{index:06d}.parquet") as tmp:
        pq.write_table(table, tmp)


def run_local(config: BatchConfig, classifier=None) -> dict:
    """Score every input row; return the summary written to ``summary.json``.

    ``classifier``: an already loaded model to score with in this process (the app passes its own).
    """
    started = time.time()
    files = input_files(config.inputs)
    out = Path(config.output)
    scorer = Scorer(config, classifier)
    try:
        fingerprint = job_fingerprint(config, files, scorer.version)
        summary_file = out / "summary.json"
        if summary_file.exists() and json.loads(summary_file.read_text()).get("job") == fingerprint:
            log.info("%s already holds the finished outputs of this job; nothing to do", out)
            return json.loads(summary_file.read_text())
        parts = out / PARTS
        prepare_parts(parts, fingerprint, config.restart)
        summary_file.unlink(missing_ok=True)  # the mark of a finished job: gone until this job finishes
        total = sum(count_rows(p) for p in files)
        progress = _progress(total, config.quiet)
        stages: Counter = Counter()  # seconds by stage, for "where time goes"
        window = max(2, 2 * config.workers)  # chunks in flight: enough to keep workers busy, few enough to bound memory
        in_flight: deque = deque()
        for index, chunk in enumerate(_timed(chunked(rows_with_context(files, config), config.chunk_rows), stages, "read")):
            if (parts / f"part-{index:06d}.parquet").exists():
                progress.update(len(chunk))
                continue
            in_flight.append((index, chunk, scorer.submit(_messages(chunk))))
            while len(in_flight) >= window or (in_flight and scorer.pool is None):
                _finish_chunk(parts, scorer, *in_flight.popleft(), progress, stages)
        while in_flight:
            _finish_chunk(parts, scorer, *in_flight.popleft(), progress, stages)
        progress.close()
    finally:
        scorer.close()
    run_info = {
        "model_version": scorer.version,
        "precision": scorer.precision,
        "device": scorer.device,
        "engine": "local",
        "workers": config.workers,
    }
    if "passed" in stages:  # a first stage ran; counted in the timings, as the workers' are summed there
        run_info["cascade"] = {"passed_by_first_stage": int(stages.pop("passed")), "scored_by_model": int(stages.pop("escalated", 0))}
    summary = finish_outputs(out, parts, files, run_info, fingerprint, started, stages)
    shutil.rmtree(parts)
    return summary


def _messages(chunk: list) -> list[Message]:
    return [Message(row.text, context, row.message_id, row.sender_role) for row, context in chunk if isinstance(row, ChatRow)]


def _finish_chunk(parts: Path, scorer: Scorer, index: int, chunk: list, pending, progress, stages: Counter) -> None:
    probs, truncated = scorer.result(pending, stages)
    started = time.perf_counter()
    rows = [row for row, _ in chunk if isinstance(row, ChatRow)]
    errors = [row for row, _ in chunk if isinstance(row, ErrorRow)]
    write_part(parts, index, prediction_table(rows, probs, truncated, scorer.version), errors)
    stages["write"] += time.perf_counter() - started
    progress.update(len(chunk))


def _timed(items: Iterable, stages: Counter, stage: str) -> Iterator:
    """``items``, adding the seconds spent producing each to ``stages[stage]``."""
    iterator = iter(items)
    while True:
        started = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        finally:
            stages[stage] += time.perf_counter() - started
        yield item


def _progress(total: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", unit_scale=True, file=sys.stderr, disable=quiet, smoothing=0.1, desc="scoring")
