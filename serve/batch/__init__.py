"""Nightly batch classification of chat logs: ``extortion-guard batch``."""

import os
from pathlib import Path

from .config import BatchConfig
from .engine import run_local

__all__ = ["BatchConfig", "run_batch", "run_local"]


def run_batch(config: BatchConfig) -> dict:
    """Run the job on the engine the config names; return its summary."""
    prepare_output(config.output)
    if config.engine == "ray":
        from .ray_engine import run_ray

        return run_ray(config)
    if config.engine != "local":
        raise ValueError(f"engine {config.engine!r} is not local or ray")
    return run_local(config)


def prepare_output(output: str) -> None:
    """Create the output folder now, so that a path that cannot be one fails before any work, naming the problem."""
    if "://" in output:
        return
    try:
        Path(output).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--output {output}: cannot create the folder ({error.strerror or error})") from error
    if not os.access(output, os.W_OK):
        raise ValueError(f"--output {output}: the folder is not writable")
