import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from model.classifier import ExtortionClassifier
from model.data_format import Message
from model.text import prepare_text
from training.perturb import FAMILIES, augment, perturb
from training.robustness import robustness, write_robustness

MESSAGE = Message("不给钱就给差评，转账也行", id="m1", label="extortion")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_disguises_a_message_with_keywords(family):
    disguised = perturb(MESSAGE, family, random.Random(1))
    assert disguised is not None and disguised.text != MESSAGE.text
    assert disguised.label == "extortion" and disguised.source == "perturbed"
    assert disguised.id == f"m1~{family}" and f"evasion:{family}" in disguised.tags


@pytest.mark.parametrize("family", ["traditional", "initials", "fullwidth", "inserted", "split", "emoji"])
def test_preparation_undoes_the_families_it_knows(family):
    original = Message("不给红包就差评", id="m", label="extortion")
    for seed in range(5):
        disguised = perturb(original, family, random.Random(seed))
        assert prepare_text(disguised.text) == prepare_text(original.text), disguised.text


def test_families_that_need_a_keyword_skip_plain_text():
    plain = Message("在吗", id="p", label="normal")
    assert perturb(plain, "emoji", random.Random(0)) is None
    assert perturb(plain, "split", random.Random(0)) is None


def test_augmentation_covers_every_label_at_the_asked_share():
    messages = [
        Message(f"第{i}单，不给钱就差评", id=f"a{i}", label=["extortion", "coercion", "complaint", "normal"][i % 4]) for i in range(400)
    ]
    copies = augment(messages, 0.25, seed=3)
    assert 60 <= len(copies) <= 140
    assert {m.label for m in copies} == {"extortion", "coercion", "complaint", "normal"}
    assert augment(messages, 0.25, seed=3) == copies  # seeded


def test_augmentation_favours_the_families_preparation_cannot_undo():
    messages = [Message(f"第{i}单，不给钱就差评", id=f"a{i}", label="extortion") for i in range(2000)]
    families = Counter(m.tags[-1].removeprefix("evasion:") for m in augment(messages, 1.0, seed=5))
    assert families["lookalike"] > 2 * families["traditional"]
    assert families["shuffle"] > 1.5 * families["inserted"]
    assert len(families) >= 8


def test_augmentation_is_the_same_under_any_hash_seed():
    script = (
        "import random; from training.perturb import FAMILIES; rng = random.Random(0); "
        "print([f('不给红包就差评，转账到支付宝', rng) for f in FAMILIES.values() for _ in range(5)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_robustness_report_has_every_applicable_family(tiny_model_dir, tmp_path):
    classifier = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu")
    messages = [MESSAGE, Message("不退款就投诉", id="c", label="coercion"), Message("质量太差了要退货", id="n", label="complaint")]
    report = robustness(classifier, messages)
    assert set(report["families"]) == set(FAMILIES)
    entry = report["families"]["inserted"]
    assert entry["extortion_n"] == 1 and entry["extortion_recall_clean"] in (0.0, 1.0)
    write_robustness(report, tmp_path, "Tiny")
    assert (tmp_path / "robustness.png").stat().st_size > 1000
    assert "| inserted |" in (tmp_path / "robustness.md").read_text()
