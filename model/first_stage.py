"""A cheap first stage for batch scoring and the API: character n-grams and a linear model let clearly ordinary
messages through and send the rest to the full model (``--cascade`` of ``batch`` and ``serve``; ``auto``, the default,
uses it where it passed the promotion gate against the model alone, and only beside the weights it was judged with).

A night of chat is mostly greetings, logistics and questions, and the full model spends as long on "在吗" as on a
threat. The first stage decides only one thing: this message is ``normal``. It never labels a message extortion,
coercion or complaint; every message it is not sure of goes to the full model. Its threshold is calibrated on dev so
that at most ``max_extortion_loss`` of the extortion the full model catches there is passed.

The weights are one safetensors file beside the full model's, with the settings in ``first_stage.json``: a hashing
vectoriser needs no vocabulary, so the linear model's coefficients are the whole model (no pickles).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data_format import Message
from .files import write_text_atomically
from .labels import LABELS

WEIGHTS, SETTINGS = "first_stage.safetensors", "first_stage.json"
NORMAL = LABELS.index("normal")


@dataclass
class FirstStageSettings:
    n_features: int = 2**17  # per part (message, context): collisions cost little at this size, the file stays small
    ngram_range: tuple[int, int] = (1, 4)
    context_turns: int = 2  # the nearest turns are the ones that turn an ordinary reply into a demand
    context_weight: float = 0.5
    regularisation: float = 32.0  # the logistic regression's C: chosen on Taobao chat outside the speed log (4: 31.6% escalated, 32: 24.8%)
    threshold: float = 1.0  # pass a message when P(normal) >= threshold; 1.0 passes nothing until calibrated
    calibration: dict = field(default_factory=dict)


class FirstStage:
    def __init__(self, coef: np.ndarray, intercept: np.ndarray, settings: FirstStageSettings):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.coef, self.intercept, self.settings = coef.astype(np.float32), intercept.astype(np.float32), settings
        self._weights = np.ascontiguousarray(self.coef.T)  # features × labels, row-major: 9× faster to multiply than coef.T
        self.vectorizer = HashingVectorizer(
            analyzer="char", ngram_range=tuple(settings.ngram_range), n_features=settings.n_features, alternate_sign=False
        )

    def features(self, messages: Sequence[Message]):
        """Hashed n-grams of each message and, down-weighted, of its nearest turns: a sparse matrix, one row a message."""
        import scipy.sparse as sp  # here, not at import: every command's parser reads CASCADE_CHOICES from this module

        # The role is part of the text: a seller's "给我钱" is not a buyer's.
        texts = [f"[{m.role or 'buyer'}]{m.text}" for m in messages]
        contexts = ["\n".join(f"[{t.role}]{t.text}" for t in m.context[-self.settings.context_turns :]) for m in messages]
        hashed = self.vectorizer.transform(texts + contexts)  # one call: for a single message the call, not the text, costs
        return sp.hstack([hashed[: len(texts)], self.settings.context_weight * hashed[len(texts) :]], format="csr")

    def predict_proba(self, messages: Sequence[Message]) -> np.ndarray:
        logits = np.asarray(self.features(messages) @ self._weights) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def passes(self, probs: np.ndarray) -> np.ndarray:
        """Which messages the first stage decides (as normal) without the full model."""
        return probs[:, NORMAL] >= self.settings.threshold

    def triage(self, messages: Sequence[Message]) -> tuple[np.ndarray, np.ndarray]:
        """The first stage's probabilities, and the indices of the messages it sends on to the full model."""
        probs = self.predict_proba(messages)
        return probs, np.flatnonzero(~self.passes(probs))

    @classmethod
    def fit(cls, messages: Sequence[Message], labels: Sequence[str], settings: FirstStageSettings | None = None, seed: int = 0):
        from sklearn.linear_model import LogisticRegression

        settings = settings or FirstStageSettings()
        untrained = cls(np.zeros((len(LABELS), 2 * settings.n_features)), np.zeros(len(LABELS)), settings)
        y = np.array([LABELS.index(label) for label in labels])
        regression = LogisticRegression(C=settings.regularisation, max_iter=300, class_weight="balanced", random_state=seed)
        regression.fit(untrained.features(messages), y)
        coef = np.zeros((len(LABELS), 2 * settings.n_features), dtype=np.float32)
        intercept = np.full(len(LABELS), -1e4, dtype=np.float32)  # a label absent from training is never predicted
        if len(regression.classes_) > 2:
            coef[regression.classes_], intercept[regression.classes_] = regression.coef_, regression.intercept_
        else:  # one row of weights: the second class's logit against a first class at zero
            coef[regression.classes_[1]], intercept[regression.classes_] = regression.coef_[0], [0.0, regression.intercept_[0]]
        return cls(coef, intercept, settings)

    def calibrate(self, messages: Sequence[Message], full_labels: Sequence[str], gold: Sequence[str], max_extortion_loss: float):
        """Set the threshold so that at most ``max_extortion_loss`` of the messages that are extortion and that the full
        model calls extortion would be passed; record what the threshold lets through of each label."""
        if not 0.0 <= max_extortion_loss < 1.0:
            raise ValueError(f"max_extortion_loss is a share of the caught extortion, in [0, 1); got {max_extortion_loss}")
        probs = self.predict_proba(messages)[:, NORMAL]
        full, gold = np.array(full_labels), np.array(gold)
        caught = np.sort(probs[(gold == "extortion") & (full == "extortion")])[::-1]
        if not len(caught):
            raise ValueError("calibration needs extortion messages that the full model catches; the dev set has none")
        allowed = int(max_extortion_loss * len(caught))
        # Strictly above the (allowed+1)-th highest, so at most `allowed` of them reach it.
        self.settings.threshold = float(max(0.5, np.nextafter(caught[allowed], np.float32(2)) if allowed < len(caught) else 0.5))
        passed = probs >= self.settings.threshold
        self.settings.calibration = {
            "messages": len(messages),
            "max_extortion_loss": max_extortion_loss,
            "passed_share": round(float(passed.mean()), 4),
            **{f"caught_{label}_passed": _share(passed, (gold == label) & (full == label)) for label in LABELS},
        }

    def save(self, folder: str | Path) -> None:
        from safetensors.numpy import save_file

        folder = Path(folder)
        save_file({"coef": self.coef.astype(np.float16), "intercept": self.intercept}, str(folder / WEIGHTS))
        write_text_atomically(folder / SETTINGS, json.dumps(asdict(self.settings), indent=1) + "\n")

    @classmethod
    def approved(cls, folder: str | Path) -> FirstStage | None:
        """The first stage in ``folder`` if there is one, it passed the promotion gate against its model, and the model
        there is still the one it was judged with (a model retrained into the same folder needs a new ``cascade fit``)."""
        from .classifier import model_version

        if not (Path(folder) / WEIGHTS).exists():
            return None
        stage = cls.load(folder)
        calibration = stage.settings.calibration
        judged_with = calibration.get("model_version")
        same_model = judged_with is None or judged_with == model_version(folder)
        return stage if calibration.get("gate", {}).get("passes") and same_model else None

    @classmethod
    def load(cls, folder: str | Path) -> FirstStage:
        folder = Path(folder)
        if not (folder / WEIGHTS).exists():
            raise FileNotFoundError(f"{folder} has no first stage ({WEIGHTS}); fit one with `extortion-guard cascade fit --model {folder}`")
        from safetensors.numpy import load_file

        tensors = load_file(str(folder / WEIGHTS))
        settings = FirstStageSettings(**json.loads((folder / SETTINGS).read_text(encoding="utf-8")))
        return cls(tensors["coef"].astype(np.float32), tensors["intercept"], settings)


CASCADE_CHOICES = ("auto", "on", "off")


def first_stage_for(folder: str | Path, cascade: str) -> FirstStage | None:
    """The first stage to use in front of the model in ``folder``, as ``--cascade`` asks: ``auto`` one that passed the
    promotion gate against its model, ``on`` any (an error without one), ``off`` none."""
    if cascade not in CASCADE_CHOICES:
        raise ValueError(f"cascade must be one of {CASCADE_CHOICES}, got {cascade!r}")
    if cascade == "on":
        return FirstStage.load(folder)
    return FirstStage.approved(folder) if cascade == "auto" else None


def merge(probs: np.ndarray, escalate: np.ndarray, scored: tuple[np.ndarray, list[bool]] | None) -> tuple[np.ndarray, list[bool]]:
    """The first stage's ``probs`` with the model's ``scored`` (probabilities, truncation flags) of the escalated rows."""
    truncated = [False] * len(probs)
    if scored is not None:
        probs[escalate] = scored[0]
        for i, flag in zip(escalate, scored[1], strict=True):
            truncated[i] = flag
    return probs, truncated


def _share(passed: np.ndarray, among: np.ndarray) -> str:
    return f"{int((passed & among).sum())} of {int(among.sum())}"


class CascadeClassifier:
    """The full classifier behind a first stage, with the full classifier's ``score`` interface: passed messages get the
    first stage's probabilities, the rest the full model's."""

    def __init__(self, full, first_stage: FirstStage):
        self.full, self.first_stage = full, first_stage

    def __getattr__(self, name):  # version, precision, device ...: the full model's
        return getattr(self.full, name)

    def predict_proba(self, items, batch_size: int = 64) -> np.ndarray:
        """As the full classifier's: probabilities ``(n, 4)`` for strings or messages. The full model is asked through its
        own ``predict_proba`` (so a score cache around it is used) for the escalated messages only."""
        from .classifier import as_message

        messages = [as_message(item) for item in ([items] if isinstance(items, str | Message) else items)]
        probs, escalate = self.first_stage.triage(messages)
        if len(escalate):
            probs[escalate] = self.full.predict_proba([messages[i] for i in escalate], batch_size=batch_size)
        return probs

    def score(self, messages: Sequence[Message], batch_size: int = 64, timings: dict | None = None) -> tuple[np.ndarray, list[bool]]:
        import time

        started = time.perf_counter()
        probs, escalate = self.first_stage.triage(messages)
        if timings is not None:  # counts ride with the seconds, so a worker pool's are summed the same way
            timings["first_stage"] = timings.get("first_stage", 0.0) + time.perf_counter() - started
            timings["passed"] = timings.get("passed", 0) + len(messages) - len(escalate)
            timings["escalated"] = timings.get("escalated", 0) + len(escalate)
        scored = self.full.score([messages[i] for i in escalate], batch_size, timings) if len(escalate) else None
        return merge(probs, escalate, scored)
