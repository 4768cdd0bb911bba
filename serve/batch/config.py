"""Settings of a batch job."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class BatchConfig:
    """What ``extortion-guard batch`` does; the command-line flags map one to one onto these fields."""

    inputs: list[str]
    """Files or folders of chat logs: ``.jsonl``/``.json`` (optionally ``.gz``), ``.csv`` (optionally ``.gz``), ``.parquet``."""

    output: str
    """Folder for predictions, errors, roll-ups, summary and report; created if missing."""

    model: str | None = None
    """Model folder or hub id; None means the shipped default model."""

    columns: dict[str, str] = field(default_factory=dict)
    """Renames, our field to the input's column: ``{"text": "content"}``."""

    context_turns: int = 4
    """How many preceding turns of the same conversation the model sees with each message."""

    max_open_conversations: int = 200_000
    """Conversations whose recent turns are kept for context; the least recently active is forgotten first."""

    chunk_rows: int = 10_000
    """Rows read, scored and written at a time; also the unit of resumption."""

    batch_size: int = 64
    """Messages per model call within a chunk (sorted by length)."""

    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda``."""

    precision: str = "auto"
    """``auto`` (the fastest path measured on this machine that keeps the labels, :mod:`model.runtime`), ``fp32``,
    ``bf16`` or ``int8`` (CPU only)."""

    workers: int = 1
    """Scoring processes (local engine); each gets an equal share of the CPU threads."""

    engine: str = "local"
    """``local`` (streaming on this machine) or ``ray`` (Ray Data, on a local instance or a cluster)."""

    ray_address: str | None = None
    """Ray cluster address (``ray://head:10001`` or ``auto``); None starts a local instance."""

    ray_concurrency: int = 1
    """Scoring actors Ray runs at once."""

    ray_num_gpus: float = 0.0
    """GPUs per scoring actor (0 for CPU actors)."""

    quiet: bool = False
    """No progress bar (for cron); errors still go to stderr."""

    restart: bool = False
    """Discard the unfinished parts of an earlier, different job in the output folder and start over."""

    def job_settings(self) -> dict:
        """The settings that change the outputs; a resumed job must match them."""
        keep = ("inputs", "columns", "context_turns", "max_open_conversations", "chunk_rows", "batch_size", "model", "precision", "engine")
        settings = {k: v for k, v in asdict(self).items() if k in keep}
        return json.loads(json.dumps(settings, default=str))  # as it reads back from job.json
