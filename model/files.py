"""Files: writing them so that a reader never sees half of one, and where caches live."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` only if the block ends without an error.

    A crash or an error (a full disk) leaves the old file, or none, never a partial one; the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def cache_root() -> Path:
    """``$EXTORTION_GUARD_CACHE``, else ``~/.cache/extortion-guard`` (``$XDG_CACHE_HOME`` respected)."""
    if "EXTORTION_GUARD_CACHE" in os.environ:
        return Path(os.environ["EXTORTION_GUARD_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "extortion-guard"
