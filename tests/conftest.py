"""Shared fixtures: a tiny randomly initialised classifier, built in the test, never downloaded."""

import json

import numpy as np
import pytest
import torch

from model.labels import ID2LABEL, LABEL2ID
from training.base_encoder import build_tokenizer

CHARS = "不给钱就差评退款货发快递好的亲在吗我要投诉转账红包删老板质量太了一下你们这个是什么时候到"


def tiny_tokenizer(max_length: int = 64):
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁", ":", "买", "卖", "家", *list(dict.fromkeys(CHARS)), "<mask>"]
    scores = np.linspace(-2.0, -8.0, len(pieces)).astype(np.float32)
    specials = {"bos": 0, "pad": 1, "eos": 2, "unk": 3, "mask": len(pieces) - 1}
    return build_tokenizer(pieces, scores, specials, max_length)


def save_tiny_model(path, seed: int = 0, max_length: int = 64):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(max_length)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_length,
        type_vocab_size=2,
        pad_token_id=1,
        id2label=ID2LABEL,
        label2id=LABEL2ID,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def private_score_cache(tmp_path_factory, monkeypatch):
    """Scores that tests cache (a distillation teacher, a retrain's parent) go to a temporary folder, not the user's home."""
    monkeypatch.setenv("EXTORTION_GUARD_CACHE", str(tmp_path_factory.mktemp("score-cache")))
