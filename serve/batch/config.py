"""Settings of a batch job."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from model.first_stage import CASCADE_CHOICES
from model.options import option

from .reader import parse_columns

ENGINES = ("local", "ray")
PRECISIONS = ("auto", "fp32", "bf16", "int8")


@dataclass
class BatchConfig:
    """What ``extortion-guard batch`` does; each field is one of its flags (``--help`` shows the help below)."""

    inputs: list[str] = option(
        help="Files or folders of chat logs: .jsonl/.json (optionally .gz), .csv (optionally .gz), .parquet.", positional=True
    )
    output: str = option(help="Folder for predictions, errors, roll-ups, summary and report; created if missing. Rerun to resume.")
    model: str | None = option(None, "Model folder or hub id; none means the shipped default model.")
    columns: dict[str, str] = option(
        {}, "Renames as FIELD=COLUMN,...: our field to the input's column, e.g. text=content,message_id=msg_id.", parse=parse_columns
    )
    context_turns: int = option(4, "How many preceding turns of the same conversation the model sees with each message.")
    max_open_conversations: int = option(
        200_000, "Conversations whose recent turns are kept for context; the least recently active is forgotten first."
    )
    chunk_rows: int = option(10_000, "Rows read, scored and written at a time; also the unit of memory and of resumption.")
    batch_size: int = option(64, "Messages per model call within a chunk (sorted by length).")
    device: str = option("auto", "auto (CUDA if present), cpu or cuda.", choices=("auto", "cpu", "cuda"))
    precision: str = option(
        "auto",
        """auto: the fastest path measured on this machine that keeps the labels (see `extortion-guard doctor`);
        fp32, bf16, or int8 (CPU only).""",
        choices=PRECISIONS,
    )
    cascade: str = option(
        "auto",
        """A cheap first stage (character n-grams saved beside the model, `extortion-guard cascade fit`) passes the messages
        it is sure are normal, and the model scores the rest. auto: when the model has a first stage that passed the
        promotion gate against the model alone; on: always (fails without one); off: the model scores every message.""",
        choices=CASCADE_CHOICES,
    )
    workers: int = option(1, "Scoring processes (local engine); each gets an equal share of the CPU threads.")
    engine: str = option("local", "local (streaming on this machine) or ray (Ray Data, on a local instance or a cluster).", choices=ENGINES)
    ray_address: str | None = option(None, "Ray cluster to join (ray://head:10001 or auto); none starts a local instance.")
    ray_concurrency: int = option(1, "Scoring actors Ray runs at once.")
    ray_num_gpus: float = option(0.0, "GPUs per scoring actor (0 for CPU actors).")
    quiet: bool = option(False, "No progress bar or summary line (for cron); errors still go to stderr.")
    restart: bool = option(False, "Discard the unfinished parts of an earlier, different job in the output folder and start over.")

    def job_settings(self) -> dict:
        """The settings that change the outputs; a resumed job must match them."""
        keep = (
            "inputs",
            "columns",
            "context_turns",
            "max_open_conversations",
            "chunk_rows",
            "batch_size",
            "model",
            "precision",
            "engine",
            "cascade",
        )
        settings = {k: v for k, v in asdict(self).items() if k in keep}
        return json.loads(json.dumps(settings, default=str))  # as it reads back from job.json
