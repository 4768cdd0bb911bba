"""A model's probabilities for messages it has scored before, kept on disk between runs (retrain's parent, a distillation teacher).

Every retrain compares the candidate with its parent on the same frozen test split,
challenge sets and real-review lines. The parent's weights and those sets do not change
between retrains, so its probabilities are scored once and read back after: on CPU that
is about half of a retrain's evaluation time. Training caches a new model's scores from
its own evaluation, so once it is promoted, the first retrain against it starts with them.

An entry is keyed by the model's weights and settings (one file per model) and by each
message's text and context. Files are plain ``.npz`` arrays, read without pickle.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from model.classifier import as_message
from model.data_format import Message
from model.files import atomic_write, cache_root
from model.labels import LABELS


def model_digest(model_dir: str | Path) -> str:
    """sha256 of a model folder's weights and config: what decides its scores."""
    folder = Path(model_dir)
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", *sorted(p.name for p in folder.glob("*.safetensors"))):
        path = folder / name
        if path.exists():
            digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def message_key(message: Message, with_role: bool = False) -> bytes:
    """16 bytes naming what the model sees of a message: its text and its context turns, and its sender's role for a model
    that reads it (``role_marker``; keys of models that do not are unchanged, so their caches stay valid)."""
    parts = [message.text, [(turn.role, turn.text) for turn in message.context]] + ([message.role] if with_role else [])
    seen = json.dumps(parts, ensure_ascii=False)
    return hashlib.blake2b(seen.encode(), digest_size=16).digest()


class CachedScores:
    """Wraps a classifier: ``predict_proba`` scores only messages this model has not scored before.

    Everything else (``version``, ``labels`` …) is the classifier's. Call :meth:`save` to keep new scores.
    """

    def __init__(self, classifier, model_dir: str | Path, root: Path | None = None):
        self.classifier = classifier
        self.path = (root or cache_root()) / "scores" / f"{model_digest(model_dir)}.npz"
        self.scores: dict[bytes, np.ndarray] = {}
        if self.path.exists():
            with np.load(self.path, allow_pickle=False) as stored:
                self.scores = {key.tobytes(): probs for key, probs in zip(stored["keys"], stored["probs"], strict=True)}
        self.hits = self.misses = 0

    def __getattr__(self, name):
        return getattr(self.classifier, name)

    def predict_proba(self, items, batch_size: int = 64) -> np.ndarray:
        single = isinstance(items, (str, dict, Message))
        messages = [as_message(x) for x in ([items] if single else items)]
        with_role = getattr(self.classifier, "role_marker", "none") != "none"
        keys = [message_key(m, with_role) for m in messages]
        missing = list({k: m for k, m in zip(keys, messages, strict=True) if k not in self.scores}.items())
        if missing:
            probs = self.classifier.predict_proba([m for _, m in missing], batch_size=batch_size)
            self.scores.update(zip((k for k, _ in missing), probs, strict=True))
        self.misses += len(missing)
        self.hits += len(messages) - len(missing)
        out = np.stack([self.scores[k] for k in keys]) if keys else np.zeros((0, len(self.classifier.labels)), np.float32)
        return out[0] if single else out

    def save(self) -> None:
        """Write the scores (to a temporary name, then rename, so a crash leaves the old file whole)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Keys as rows of bytes: numpy's fixed-width bytes type would drop a key's trailing zero bytes.
        keys = np.frombuffer(b"".join(self.scores), dtype=np.uint8).reshape(-1, 16)
        probs = np.stack(list(self.scores.values())).astype(np.float32) if self.scores else np.zeros((0, len(LABELS)), np.float32)
        with atomic_write(self.path) as tmp, open(tmp, "wb") as handle:  # a file object: np.savez would add ".npz" to a name
            np.savez(handle, keys=keys, probs=probs)
