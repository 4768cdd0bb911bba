"""Average fine-tuned classifiers weight by weight (a "model soup", Wortsman et al., 2022).

Models fine-tuned from the same start often average into one that keeps much of what each learnt: here, the
shipped model's hold on the older challenge sets and a newer model's gains on independent text. Each model's
extortion shift (the constant training lowers the extortion logit by, see ``TrainConfig.tune_extortion_shift``) is
undone before averaging, and the average gets its own, tuned as training tunes one. :func:`retune` gives one trained
model a new operating point the same way, with nothing else changed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from model.classifier import ExtortionClassifier, model_version, resolve_device
from model.labels import LABEL2ID

from .data import corpus_for
from .operating_point import apply_shift, extortion_logit_shift, messages_to_tune_on, undo_shift
from .score_cache import CachedScores
from .trainer import corpus_counts, evaluate_run, save_model, write_run_files
from .training_args import TrainConfig


def load_unshifted(path: str | Path):
    """A trained classifier's model with its extortion shift added back to the head's bias (the weights as trained)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(path), use_safetensors=True, dtype=torch.float32)
    undo_shift(model)
    return model


def soup_weights(models: Sequence[str | Path], weights: Sequence[float] | None = None) -> list[float]:
    """Each model's share of the average: ``weights`` checked (non-negative, one per model, summing to 1), or equal shares."""
    if len(models) < 2:
        raise ValueError(f"average at least two models, got {len(models)}")
    weights = [1.0 / len(models)] * len(models) if weights is None else list(weights)
    if len(weights) != len(models) or min(weights) < 0.0 or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"weights must be one non-negative number per model summing to 1, got {weights} for {len(models)} models")
    return weights


def average_weights(models: Sequence[str | Path], weights: Sequence[float] | None = None):
    """The last model (its config, architecture and settings) with every tensor the weighted mean over ``models``, shifts
    undone (``weights``: see :func:`soup_weights`)."""
    weights = soup_weights(models, weights)
    loaded = [load_unshifted(path) for path in models]
    states, target = [m.state_dict() for m in loaded[:-1]], loaded[-1]
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            for path, state in zip(models[:-1], states, strict=True):
                if name not in state or state[name].shape != tensor.shape:
                    raise ValueError(f"{path} and {models[-1]} differ in {name}: average only models fine-tuned from the same base")
            if tensor.is_floating_point():
                tensor.copy_(sum(w * s[name] for w, s in zip(weights[:-1], states, strict=True)) + weights[-1] * tensor)
    return target


def tune_shift(model, tokenizer, config: TrainConfig, corpus) -> float | None:
    """Lower the extortion logit by the shift ``config.tune_extortion_shift`` picks (as training does); returns the shift,
    or None where the rule is ``no``."""
    if config.tune_extortion_shift == "no":
        return None
    messages = messages_to_tune_on(config.tune_extortion_shift, corpus)
    classifier = ExtortionClassifier(model, tokenizer, max_length=config.max_length, device=config.device)
    # Log-probabilities differ from logits by a constant per row, so the arg-max under any shift is the same.
    log_probs = np.log(np.clip(classifier.predict_proba(messages, batch_size=config.eval_batch_size), 1e-12, 1.0)).astype(np.float32)
    labels = np.array([LABEL2ID[m.label] for m in messages])
    shift = extortion_logit_shift(log_probs, labels, rule=config.tune_extortion_shift, target_precision=config.target_extortion_precision)
    apply_shift(model, shift)
    return shift


def soup(models: Sequence[str | Path], config: TrainConfig, weights: Sequence[float] | None = None, corpus=None) -> dict:
    """Average ``models`` into ``config.out``, tune its shift (``config.tune_extortion_shift``), evaluate it as training
    does, and write the model folder with ``train_metrics.json`` and the model card. ``config``: the data and evaluation
    settings (the last model's ``train_config.json`` is the usual choice)."""
    from transformers import AutoTokenizer

    weights = soup_weights(models, weights)
    model, tokenizer = average_weights(models, weights), AutoTokenizer.from_pretrained(str(models[-1]))
    parents = [model_version(p) for p in models]
    averaged_from = " + ".join(f"{w:.3g} × `{p}`" for w, p in zip(weights, parents, strict=True))
    return _finish(model, tokenizer, config, corpus, parents[0], averaged_from=averaged_from)


def retune(model_folder: str | Path, config: TrainConfig, corpus=None) -> dict:
    """A trained model with a new operating point and nothing else changed: its shift undone, the one
    ``config.tune_extortion_shift`` picks applied, evaluated as training does and written to ``config.out``."""
    from transformers import AutoTokenizer

    model, tokenizer = load_unshifted(model_folder), AutoTokenizer.from_pretrained(str(model_folder))
    return _finish(model, tokenizer, config, corpus, model_version(model_folder), retuned_from=model_version(model_folder))


def _finish(model, tokenizer, config: TrainConfig, corpus, parent: str, **provenance) -> dict:
    """Tune the shift, save to ``config.out``, evaluate as training does, write the metrics and the model card."""
    out = Path(config.out)
    corpus = corpus or corpus_for(config)
    shift = tune_shift(model, tokenizer, config, corpus)
    model.config.extortion_guard_version = out.name
    save_model(model, tokenizer, out, config.save_dtype)

    classifier = CachedScores(ExtortionClassifier.from_pretrained(out, device=config.device), out)
    results = evaluate_run(classifier, corpus, config, out / "eval")
    classifier.save()
    summary = {
        "base": config.base,
        **provenance,
        "parent_version": parent,
        "device": str(resolve_device(config.device)),
        "precision": "fp32",
        "train_seconds": 0.0,
        "epochs_run": 0.0,
        "best_dev_macro_f1": results["dev"]["macro_f1"],
        **corpus_counts(corpus),
        "augmented": 0,
        "extortion_logit_shift": shift,
        **results,
    }
    write_run_files(out, config, summary)
    return summary


def config_of(run: str | Path, **changes) -> TrainConfig:
    """The training settings a run was trained with (``train_config.json``; defaults where it has none), with ``changes``."""
    saved = Path(run) / "train_config.json"
    fields = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}
    return TrainConfig(**{**fields, **changes})
