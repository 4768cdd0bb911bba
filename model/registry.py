"""Which model is current: the latest promoted version in the registry, else the shipped default.

Promotion and rollback live in :mod:`training.registry`; inference only needs to read this.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"


def registry_root() -> Path:
    """``$EXTORTION_GUARD_MODELS``, else ``models/`` in the working folder."""
    return Path(os.environ.get("EXTORTION_GUARD_MODELS", "models"))


def read_registry(root: Path) -> dict:
    path = root / "registry.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"current": None, "history": []}


def current_model_dir(root: Path | None = None) -> Path:
    """The promoted model's folder, else the shipped default."""
    root = root or registry_root()
    current = read_registry(root)["current"]
    return root / current if current else DEFAULT_MODEL_DIR


def describe_current(root: Path | None = None) -> str:
    """Which model a server started here would load, and from which registry: printed at start-up."""
    root = root or registry_root()
    current = read_registry(root)["current"]
    where = f"registry {root.resolve()} (set EXTORTION_GUARD_MODELS to use another)"
    return f"current model {current} from {where}" if current else f"shipped default model {DEFAULT_MODEL_DIR}: no promotion in {where}"
