"""Nightly batch classification of chat logs: ``extortion-guard batch``."""

from .config import BatchConfig
from .engine import run_local

__all__ = ["BatchConfig", "run_batch", "run_local"]


def run_batch(config: BatchConfig) -> dict:
    """Run the job on the engine the config names; return its summary."""
    if config.engine == "ray":
        from .ray_engine import run_ray

        return run_ray(config)
    if config.engine != "local":
        raise ValueError(f"engine {config.engine!r} is not local or ray")
    return run_local(config)
