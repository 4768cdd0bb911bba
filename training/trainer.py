"""Fine-tune a base encoder into the four-label classifier with the ``transformers`` Trainer."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from model.classifier import ExtortionClassifier, resolve_device, resolve_precision
from model.labels import ID2LABEL, LABEL2ID, LABELS

from .data import corpus_for, label_counts, to_dataset
from .evaluate import compute_metrics, evaluate, extortion_rate
from .model_card import write_model_card
from .operating_point import SHIFT_KEY, apply_shift, extortion_logit_shift, messages_to_tune_on
from .perturb import augment
from .robustness import robustness, write_robustness
from .score_cache import CachedScores
from .training_args import TrainConfig


def class_weights(train_labels: list[str], scheme: str) -> torch.Tensor | None:
    """``balanced``: n / (labels x count) per label, as in scikit-learn."""
    if scheme == "none":
        return None
    if scheme != "balanced":
        raise ValueError(f"class_weighting must be balanced or none, got {scheme!r}")
    counts = np.array([max(train_labels.count(label), 1) for label in LABELS], dtype=np.float64)
    return torch.tensor(counts.sum() / (len(LABELS) * counts), dtype=torch.float32)


def train(config: TrainConfig, corpus=None) -> dict:
    """Run one fine-tuning: train with dev early stopping, evaluate dev and test, save the model folder.

    ``corpus``: an already loaded :class:`Corpus` for ``config``'s data (retraining loads it once for both models).
    """
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        TrainingArguments,
        set_seed,
    )

    ClassifierTrainer = make_trainer_class()

    set_seed(config.seed)
    device = resolve_device(config.device)
    corpus = corpus or corpus_for(config)
    tune_on = messages_to_tune_on(config.tune_extortion_shift, corpus) if config.tune_extortion_shift != "no" else []
    external = [m for sample in corpus.external_train.values() for m in sample]
    train_messages = (corpus.train + external)[: config.max_train_samples]
    disguised = augment(train_messages, config.augment_share, config.seed)
    dev_messages = corpus.dev[: config.max_eval_samples]
    if not train_messages or not dev_messages:
        raise ValueError(f"need training and dev messages; got {len(train_messages)} train, {len(dev_messages)} dev")

    tokenizer = AutoTokenizer.from_pretrained(config.base)
    model = AutoModelForSequenceClassification.from_pretrained(
        config.base, num_labels=len(LABELS), id2label=ID2LABEL, label2id=LABEL2ID, use_safetensors=True, dtype=torch.float32
    )
    parent_version = getattr(model.config, "extortion_guard_version", None)  # set when continuing from one of our classifiers
    if config.num_layers:
        keep_layers(model, config.num_layers)
    frozen = train_top_layers_only(model, config.trained_layers) if config.trained_layers else []
    train_set = to_dataset(
        train_messages + disguised, tokenizer, config.max_length, config.text_preparation, config.role_marker, config.hard_case_weight
    )
    if config.teacher:
        teacher = CachedScores(ExtortionClassifier.from_pretrained(config.teacher, device=config.device), config.teacher)
        probs = teacher.predict_proba(train_messages + disguised, batch_size=config.eval_batch_size)
        teacher.save()  # the next student of this teacher skips scoring
        train_set = train_set.add_column("teacher_probs", probs.tolist())
        del teacher
    dev_set = to_dataset(dev_messages, tokenizer, config.max_length, config.text_preparation, config.role_marker)
    weights = class_weights([m.label for m in train_messages], config.class_weighting)

    def dev_metrics(prediction):
        logits, labels = prediction
        probs = torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)), -1).numpy()
        metrics = compute_metrics(np.asarray(labels), probs)
        return {"macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"]}

    out = Path(config.out)
    checkpoints = out / "checkpoints"
    bf16 = resolve_precision(config.precision, device) == "bf16"  # TrainConfig allows auto, fp32 and bf16
    # With one epoch there is no checkpoint to choose between, so the Trainer skips its dev pass; evaluate_run scores dev after.
    choose_best = config.epochs > 1
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        eval_strategy="epoch" if choose_best else "no",
        save_strategy="epoch" if choose_best else "no",
        save_total_limit=2,
        load_best_model_at_end=choose_best,
        metric_for_best_model="macro_f1" if choose_best else None,
        greater_is_better=True,
        logging_strategy="epoch",
        report_to="none",
        train_sampling_strategy="group_by_length",  # batches of similar length pad little
        seed=config.seed,
        use_cpu=device.type == "cpu",
        bf16=bf16,
        dataloader_num_workers=0,
        save_only_model=True,
        remove_unused_columns=False,  # the loss needs teacher_probs; ClassifierTrainer drops what the model does not take
    )
    trainer = ClassifierTrainer(
        class_weights=weights,
        label_smoothing=config.label_smoothing,
        distill_weight=config.distill_weight if config.teacher else 0.0,
        distill_temperature=config.distill_temperature,
        frozen_modules=frozen,
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=dev_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=dev_metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience)] if choose_best else [],
    )
    started = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - started

    trained = trainer.model.to("cpu")
    if tune_on:
        # The predictions come in the sampler's order (transformers 5 groups eval batches by length too), so the labels
        # are the ones returned beside them, never the messages' order.
        tune_set = (
            dev_set
            if tune_on is corpus.dev
            else to_dataset(tune_on, tokenizer, config.max_length, config.text_preparation, config.role_marker)
        )
        prediction = trainer.predict(tune_set)
        shift = extortion_logit_shift(
            np.asarray(prediction.predictions, dtype=np.float32),
            np.asarray(prediction.label_ids),
            rule=config.tune_extortion_shift,
            target_precision=config.target_extortion_precision,
        )
        apply_shift(trained, shift)
    trained.config.extortion_guard_max_length = config.max_length
    trained.config.extortion_guard_text_preparation = config.text_preparation
    trained.config.extortion_guard_role_marker = config.role_marker
    trained.config.extortion_guard_version = out.name
    save_model(trained, tokenizer, out, config.save_dtype)
    shutil.rmtree(checkpoints, ignore_errors=True)

    classifier = CachedScores(ExtortionClassifier.from_pretrained(out, device=config.device), out)
    results = evaluate_run(classifier, corpus, config, out / "eval")
    classifier.save()  # once this model is current, a retrain against it reuses these scores
    summary = {
        "base": config.base,
        "parent_version": parent_version,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "precision": "bf16" if bf16 else "fp32",
        "train_seconds": round(train_seconds, 1),
        "epochs_run": round(float(result.metrics.get("epoch", 0.0)), 2),
        "best_dev_macro_f1": trainer.state.best_metric if choose_best else results["dev"]["macro_f1"],
        **corpus_counts(corpus),
        "augmented": len(disguised),
        "extortion_logit_shift": getattr(trained.config, SHIFT_KEY, None),
        **results,
    }
    write_run_files(out, config, summary)
    return summary


def corpus_counts(corpus) -> dict:
    """Label counts of each split and of each real-text training sample, and how many messages were kept out as near challenge items."""
    return {
        "counts": {name: label_counts(msgs) for name, msgs in (("train", corpus.train), ("dev", corpus.dev), ("test", corpus.test))},
        "external_train": {name: label_counts(sample) for name, sample in corpus.external_train.items()},
        "excluded_near_challenge": len(corpus.excluded),
        **({"focus": corpus.focus} if corpus.focus else {}),
    }


def write_run_files(out: Path, config: TrainConfig, summary: dict) -> None:
    """``train_config.json``, ``train_metrics.json`` and the model card, beside the weights."""
    (out / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "train_metrics.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_model_card(out, config, summary)


def keep_layers(model, count: int) -> None:
    """Keep ``count`` of the encoder's layers, evenly spaced from the first to the last (DistilBERT's way of making a student)."""
    layers = model.base_model.encoder.layer
    if not 0 < count <= len(layers):
        raise ValueError(f"num_layers must be between 1 and the base's {len(layers)} layers, got {count}")
    keep = np.linspace(0, len(layers) - 1, count).round().astype(int)
    model.base_model.encoder.layer = torch.nn.ModuleList(layers[i] for i in keep)
    model.config.num_hidden_layers = count


def train_top_layers_only(model, count: int) -> list:
    """No gradients for the embeddings and every encoder layer below the top ``count`` (a model with no more layers trains
    them all; its embeddings stay fixed).

    Returns the frozen modules.
    """
    if count < 0:
        raise ValueError(f"trained_layers must be 0 (all) or a number of top layers, got {count}")
    layers = model.base_model.encoder.layer
    frozen = [model.base_model.embeddings, *layers[: max(len(layers) - count, 0)]]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def make_trainer_class():
    """The Trainer with our loss (built on first use, so importing this module does not import transformers' Trainer)."""
    from transformers import Trainer

    class ClassifierTrainer(Trainer):
        """Class-weighted cross-entropy (each message also weighted by its ``weight`` column where there is one), plus
        (with a teacher) the KL divergence from the teacher's softened probabilities."""

        def __init__(
            self, *args, class_weights=None, label_smoothing=0.0, distill_weight=0.0, distill_temperature=2.0, frozen_modules=(), **kwargs
        ):
            super().__init__(*args, **kwargs)
            self.class_weights, self.label_smoothing = class_weights, label_smoothing
            self.distill_weight, self.distill_temperature = distill_weight, distill_temperature
            self.frozen_modules = list(frozen_modules)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            inputs.pop("length", None)
            teacher_probs = inputs.pop("teacher_probs", None)
            message_weights = inputs.pop("weight", None)
            labels = inputs.pop("labels")
            # The Trainer puts the whole model in training mode each step: frozen layers compute as at inference, without dropout.
            for module in self.frozen_modules:
                module.eval()
            outputs = model(**inputs)
            logits = outputs.logits.float()
            loss = weighted_cross_entropy(logits, labels, self.class_weights, message_weights, self.label_smoothing)
            if teacher_probs is not None and self.distill_weight > 0:
                t = self.distill_temperature
                # log p / t is the teacher's logits / t up to a constant, so its softmax is the teacher's softened distribution
                teacher = torch.softmax(torch.log(teacher_probs.float().clamp_min(1e-12)) / t, dim=-1)
                divergence = torch.nn.functional.kl_div(torch.log_softmax(logits / t, dim=-1), teacher, reduction="batchmean") * t * t
                loss = (1 - self.distill_weight) * loss + self.distill_weight * divergence
            return (loss, outputs) if return_outputs else loss

    return ClassifierTrainer


def weighted_cross_entropy(logits, labels, class_weights=None, message_weights=None, label_smoothing=0.0) -> torch.Tensor:
    """Cross-entropy weighted by label and by message: each message's loss times its weight, over the sum of the weights
    that count (with no message weights this is ``cross_entropy(..., weight=class_weights)``, mean reduction)."""
    class_weights = None if class_weights is None else class_weights.to(logits.device)
    # reduction="none" already multiplies each loss by its label's class weight
    losses = torch.nn.functional.cross_entropy(logits, labels, weight=class_weights, reduction="none", label_smoothing=label_smoothing)
    counted = torch.ones_like(losses) if class_weights is None else class_weights[labels]
    if message_weights is not None:
        message_weights = message_weights.to(logits.device, losses.dtype)
        losses, counted = losses * message_weights, counted * message_weights
    return losses.sum() / counted.sum()


def evaluate_run(classifier, corpus, config: TrainConfig, eval_dir: Path) -> dict:
    """Dev, test (with robustness), every challenge and evaluation set, and the extortion rate on held-out real text."""
    limit, size = config.max_eval_samples, config.eval_batch_size
    results = {"dev": evaluate(classifier, corpus.dev[:limit], eval_dir / "dev", "Dev split", size)}
    if corpus.test:
        results["test"] = evaluate(classifier, corpus.test[:limit], eval_dir / "test", "Test split", size)
        results["robustness"] = robustness(classifier, corpus.test[:limit], config.seed, size)
        write_robustness(results["robustness"], eval_dir / "test", "Robustness on the test split")
    results["challenges"] = {
        name: evaluate(classifier, messages[:limit], eval_dir / f"challenge-{name}", f"Challenge set {name}", size)
        for name, messages in corpus.challenges.items()
    }
    results["eval_sets"] = {
        name: evaluate(classifier, messages[:limit], eval_dir / f"eval-{name}", f"Evaluation set {name}", size)
        for name, messages in corpus.eval_sets.items()
    }
    if corpus.tuning:  # reported beside the operating point chosen on them; never a headline figure
        results["tuning"] = evaluate(classifier, corpus.tuning[:limit], eval_dir / "tuning", "Tuning sets", size)
    results["external_extortion_rate"] = {
        name: extortion_rate(classifier, messages[:limit], size) for name, messages in corpus.external_held_out.items()
    }
    return results


def save_model(model, tokenizer, out: Path, dtype: str) -> None:
    """Save a standard Hugging Face folder (safetensors); weights stored in ``dtype``, config says float32."""
    model.to(getattr(torch, dtype)).save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    tokenizer.save_pretrained(out)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["dtype"] = "float32"  # compute dtype on load: CPUs are slow or unsupported in float16
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
