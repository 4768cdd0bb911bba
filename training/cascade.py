"""Fit and calibrate the cascade's first stage (:mod:`model.first_stage`) for a trained model, and save it beside it.

The first stage learns the labelled corpus and the real text the model was trained on (with disguised copies, so that
obfuscated demands do not read as ordinary chat), then its threshold is set on the model's dev split against the
full model's own labels: the share of caught extortion it may pass is ``max_extortion_loss``. Last, the cascade is
judged against the model alone on every set the promotion gate reads, with the gate's own checks, and the verdict is
saved with the first stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from model.first_stage import CascadeClassifier, FirstStage, FirstStageSettings
from model.labels import LABELS

from .data import corpus_for
from .perturb import augment
from .training_args import TrainConfig

log = logging.getLogger(__name__)

COMPARISON = "first_stage_comparison.md"


def fit_cascade(model_dir: str | Path, out: str | Path, max_extortion_loss: float = 0.005, seed: int = 0) -> FirstStage:
    """Fit, calibrate and judge the first stage of ``model_dir``; save it there. ``out``: the judging's evaluation folders."""
    from model.classifier import ExtortionClassifier

    from .score_cache import CachedScores

    model_dir = Path(model_dir)
    config_file = model_dir / "train_config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{model_dir} has no train_config.json: the first stage learns the data that model was trained on")
    config = TrainConfig(**json.loads(config_file.read_text(encoding="utf-8")))
    corpus = corpus_for(config)
    train = corpus.train + [m for sample in corpus.external_train.values() for m in sample]
    train += augment(train, config.augment_share, seed)
    log.info("fitting the first stage on %d messages", len(train))
    stage = FirstStage.fit(train, [m.label for m in train], FirstStageSettings(), seed)
    full = CachedScores(ExtortionClassifier.from_pretrained(model_dir, device="cpu"), model_dir)
    full_labels = [LABELS[i] for i in full.predict_proba(corpus.dev).argmax(axis=1)]
    stage.calibrate(corpus.dev, full_labels, [m.label for m in corpus.dev], max_extortion_loss)
    stage.settings.calibration["gate"] = judge(model_dir, CascadeClassifier(full, stage), corpus, dataclasses.replace(config, out=str(out)))
    stage.settings.calibration["model_version"] = full.version
    full.save()
    stage.save(model_dir)
    return stage


def judge(model_dir: Path, cascade: CascadeClassifier, corpus, config: TrainConfig) -> dict:
    """The promotion gate's checks of the cascade against the model alone (``comparison.md`` in ``config.out``)."""
    from .retrain import compare
    from .trainer import evaluate_run

    results = evaluate_run(cascade, corpus, config, Path(config.out) / "eval")
    comparison = compare({**results, "train_seconds": 0.0}, model_dir, corpus, config)
    failed = [c["name"] for c in comparison["checks"] if not c["passed"]]
    shutil.copy(Path(config.out) / "comparison.md", model_dir / COMPARISON)  # the verdict travels with the first stage
    return {"passes": not failed, "failed": failed, "comparison": COMPARISON}
