"""Nightly batch classification of chat logs: ``extortion-guard batch``."""

from .config import BatchConfig
from .engine import run_local

__all__ = ["BatchConfig", "run_local"]
