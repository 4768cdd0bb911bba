"""Load a fine-tuned classifier and predict labels for messages."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data_format import Message, message_from_json
from .inputs import EncodedBatch, encode_messages, preparation
from .labels import LABELS
from .registry import DEFAULT_MODEL_DIR, current_model_dir  # noqa: F401 - DEFAULT_MODEL_DIR is part of this module's API

DEFAULT_MAX_LENGTH = 160
PRECISIONS = ("auto", "fp32", "bf16", "int8")


@dataclass
class Prediction:
    """The verdict for one message."""

    label: str
    probabilities: dict[str, float]
    truncated: bool = False
    id: str | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "label": self.label, "probabilities": self.probabilities, "truncated": self.truncated}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but no CUDA GPU is visible")
    return torch.device(device)


def as_message(item: str | dict | Message) -> Message:
    """Accept a plain string, a dict in the data format, or a :class:`Message`."""
    if isinstance(item, Message):
        if not item.text.strip():
            raise ValueError("message text is empty or whitespace only")
        return item
    if isinstance(item, str):
        item = {"text": item}
    return message_from_json(item)


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively: a recent GPU, or a CPU with AVX-512 BF16 or AMX units."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def model_version(path: str | os.PathLike | None = None) -> str:
    """The version name of a model folder (default: the current model), read from its config without loading weights."""
    from transformers import AutoConfig

    path = str(path or current_model_dir())
    return getattr(AutoConfig.from_pretrained(path), "extortion_guard_version", None) or Path(path).name


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` becomes bf16 where it is native and fp32 elsewhere (emulated bf16 is slower than fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def quantize_int8(model, device: torch.device):
    """Dynamic int8 quantisation of the linear layers (weights int8, activations quantised per batch)."""
    if device.type != "cpu":
        raise ValueError(f"precision 'int8' runs on the CPU only, not on {device.type}")
    with warnings.catch_warnings():  # torch.ao's eager quantisation warns that it moves to torchao; it still works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def distinct_inputs(encoded: EncodedBatch) -> tuple[list[int], np.ndarray]:
    """The rows whose model input is seen first, and for every row the row it copies.

    Chat logs repeat inputs (greetings, "好的"), and text preparation turns many disguises back
    into their plain text: each distinct input is scored once.
    """
    first: dict[tuple, int] = {}
    copy_of = np.empty(len(encoded.input_ids), dtype=np.int64)
    for row, key in enumerate(zip(map(tuple, encoded.input_ids), map(tuple, encoded.token_type_ids), strict=True)):
        copy_of[row] = first.setdefault(key, row)
    return list(first.values()), copy_of


class ExtortionClassifier:
    """A fine-tuned sequence classifier with the labels of :mod:`model.labels`.

    >>> clf = ExtortionClassifier.from_pretrained()          # the shipped default
    >>> clf.predict("不给钱就给差评").label
    'extortion'
    """

    def __init__(self, model, tokenizer, max_length: int = DEFAULT_MAX_LENGTH, device: str = "auto", precision: str = "fp32"):
        self.device = resolve_device(device)
        precision = resolve_precision(precision, self.device)
        self.float_model = model  # ONNX Runtime exports (and quantises) from the unquantised weights
        if precision == "int8":
            model = quantize_int8(model, self.device)
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = min(max_length, model.config.max_position_embeddings)
        # Models trained before text preparation existed (and foreign checkpoints) saw whitespace-collapsed text.
        self.text_preparation = getattr(model.config, "extortion_guard_text_preparation", "whitespace")
        preparation(self.text_preparation)  # fail at load, not at the first prediction, on an unknown name
        self.role_marker = getattr(model.config, "extortion_guard_role_marker", "none")
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if sorted(labels) != sorted(LABELS):
            raise ValueError(f"model labels {labels} are not the expected {list(LABELS)}")
        self.labels = labels
        self.onnx = None  # an OnnxEncoder once use_onnx_runtime() is called
        self._exported: dict[bool, object] = {}  # int8 or not: the ONNX Runtime encoders exported so far

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, device: str = "auto", max_length: int | None = None, precision: str = "fp32"
    ):
        """Load from a local folder (default: the current model, see :mod:`model.registry`) or a hub id; safetensors only.

        ``precision``: ``auto`` (bf16 where the hardware has it, else fp32); ``fp32``; ``bf16`` (autocast: the matrix units
        of recent CPUs, or a GPU);
        ``int8`` (dynamic quantisation of the linear layers, CPU only).
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        path = str(path or current_model_dir())
        # A local model loads in under a second: transformers' "Loading weights" bar would only be noise in every command.
        bar_was_on = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True, dtype=torch.float32)
        finally:
            if bar_was_on:
                transformers_logging.enable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(path)
        if max_length is None:
            max_length = getattr(model.config, "extortion_guard_max_length", DEFAULT_MAX_LENGTH)
        return cls(model, tokenizer, max_length=max_length, device=device, precision=precision)

    def use_onnx_runtime(self, threads: int | None = None) -> bool:
        """Score with ONNX Runtime (see :mod:`model.onnx_runtime`) when on CPU in fp32 or int8 and it is installed; returns
        whether it is used.

        For servers, whose requests are mostly single messages: several times faster there than eager PyTorch
        (int8: ONNX Runtime's own quantisation instead of PyTorch's). Exporting takes a few seconds, once.
        Batch jobs keep PyTorch, which is as fast on full batches.
        """
        from . import onnx_runtime

        if self.device.type != "cpu" or self.precision not in ("fp32", "int8") or not onnx_runtime.available():
            return False
        int8 = self.precision == "int8"
        if self._exported.get(int8) is None:  # a second call (model.runtime switching back to it) reuses the graph
            names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in self.tokenizer.model_input_names]
            self._exported[int8] = onnx_runtime.OnnxEncoder(self.float_model, names, threads, int8=int8)
        self.onnx = self._exported[int8]
        return True

    @property
    def version(self) -> str:
        """A name for the loaded weights, for output files."""
        return getattr(self.model.config, "extortion_guard_version", None) or Path(self.model.name_or_path).name

    def predict_proba(self, items, batch_size: int = 64) -> np.ndarray:
        """Per-label probabilities, shape ``(n, 4)`` in :data:`LABELS` order (one row for a single item)."""
        single = isinstance(items, (str, dict, Message))
        messages = [as_message(x) for x in ([items] if single else items)]
        probs, _ = self.score(messages, batch_size)
        return probs[0] if single else probs

    def predict(self, items, batch_size: int = 64) -> Prediction | list[Prediction]:
        """Label and probabilities for a string, a record, or a list of either."""
        single = isinstance(items, (str, dict, Message))
        messages = [as_message(x) for x in ([items] if single else items)]
        probs, truncated = self.score(messages, batch_size)
        predictions = [
            Prediction(LABELS[int(row.argmax())], {label: round(float(p), 6) for label, p in zip(LABELS, row, strict=True)}, cut, m.id)
            for row, cut, m in zip(probs, truncated, messages, strict=True)
        ]
        return predictions[0] if single else predictions

    @torch.inference_mode()
    def score(self, messages: Sequence[Message], batch_size: int = 64, timings: dict | None = None) -> tuple[np.ndarray, list[bool]]:
        """Probabilities ``(n, 4)`` in :data:`LABELS` order and the truncation flags, for validated messages.

        ``timings``, when given, gains the seconds spent preparing and tokenising (``tokenise``) and in the model (``model``).
        """
        started = time.perf_counter()
        encoded = encode_messages(self.tokenizer, messages, self.max_length, self.text_preparation, self.role_marker)
        tokenised = time.perf_counter()
        distinct, copy_of = distinct_inputs(encoded)
        # Sort by length so each batch pads little, then put rows back in input order.
        order = sorted(distinct, key=lambda row: len(encoded.input_ids[row]))
        probs = np.zeros((len(messages), len(LABELS)), dtype=np.float32)
        to_ours = [self.labels.index(label) for label in LABELS]
        pad_id = self.tokenizer.pad_token_id
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in encoded.select(rows).padded(pad_id).items()}
            if "token_type_ids" not in self.tokenizer.model_input_names:
                tensors.pop("token_type_ids")
            logits = self._logits(tensors)
            probs[rows] = torch.softmax(logits, dim=-1)[:, to_ours].cpu().numpy()
        probs = probs[copy_of]
        if timings is not None:
            timings["tokenise"] = timings.get("tokenise", 0.0) + tokenised - started
            timings["model"] = timings.get("model", 0.0) + time.perf_counter() - tokenised
        return probs, encoded.truncated

    def _logits(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.onnx is not None:
            return self.onnx(**tensors)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model(**tensors).logits.float()
