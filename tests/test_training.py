import json
import random

import pytest

from model.classifier import ExtortionClassifier
from model.data_format import InvalidDataError
from model.labels import LABELS
from tests.conftest import CHARS, write_jsonl
from training.trainer import class_weights, train
from training.training_args import TrainConfig


def synthetic_records(n=120, seed=0):
    rng = random.Random(seed)
    records = []
    for i in range(n):
        label = LABELS[i % 4]
        # each label gets its own characters, so even a tiny model can learn something
        chars = CHARS[(i % 4) * 8 : (i % 4) * 8 + 8]
        text = "".join(rng.choice(chars) for _ in range(rng.randint(3, 12)))
        records.append({"id": f"syn-{i:03d}", "text": text, "label": label, "source": "generated", "context": []})
    return records


def test_balanced_class_weights_favour_rare_labels():
    weights = class_weights(["normal"] * 6 + ["extortion"] * 2, "balanced").tolist()
    assert weights[LABELS.index("extortion")] > weights[LABELS.index("normal")]
    assert class_weights(["normal"], "none") is None


def test_training_writes_a_standard_model_folder(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_records())
    challenge = write_jsonl(tmp_path / "hard.jsonl", [{**r, "id": f"ch-{i}"} for i, r in enumerate(synthetic_records(8, seed=1))])
    (tmp_path / "reviews.txt").write_text("\n".join(f"好评{i}快递很快" for i in range(30)), encoding="utf-8")
    sources = tmp_path / "sources.json"
    sources.write_text(
        json.dumps({"sources": [{"name": "reviews", "path": "reviews.txt", "weak_label": "normal", "train_lines": 10}]}), encoding="utf-8"
    )
    (tmp_path / "eval" / "blind").mkdir(parents=True)
    write_jsonl(
        tmp_path / "eval" / "blind" / "writer-a.jsonl", [{**r, "id": f"bl-{i}"} for i, r in enumerate(synthetic_records(12, seed=2))]
    )
    out = tmp_path / "model"
    (tmp_path / "notes.md").write_text("## Recipe tries\n\n| try | dev macro-F1 |\n", encoding="utf-8")
    config = TrainConfig(
        data=[str(data)],
        frozen_test=None,
        challenge=[str(challenge)],
        eval_sets=[str(tmp_path / "eval")],
        sources=str(sources),
        card_notes=str(tmp_path / "notes.md"),
        tune_extortion_shift="dev-macro-f1",
        base=str(tiny_model_dir),
        out=str(out),
        epochs=10,
        early_stopping_patience=10,
        batch_size=16,
        learning_rate=1e-3,
        max_length=32,
        device="cpu",
        precision="fp32",
    )
    summary = train(config)

    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert not (out / "checkpoints").exists()
    saved = json.loads((out / "config.json").read_text())
    assert saved["id2label"] == {str(i): label for i, label in enumerate(LABELS)}
    assert json.loads((out / "train_config.json").read_text())["learning_rate"] == 1e-3
    for name in ("metrics.json", "report.md", "confusion_matrix.png", "pr_curves.png"):
        assert (out / "eval" / "dev" / name).exists()
    card = (out / "README.md").read_text()
    assert "| extortion |" in card and "macro" in card and str(tiny_model_dir) in card
    assert summary["counts"]["train"]["normal"] > 0 and summary["dev"]["n"] > 0
    assert summary["dev"]["macro_f1"] > 0.25  # better than chance on separable synthetic data
    assert summary["challenges"]["hard"]["n"] == 8 and (out / "eval" / "challenge-hard" / "report.md").exists()
    held_out = summary["external_extortion_rate"]["reviews"]
    assert 0 < held_out["n"] < 30 and 0.0 <= held_out["rate"] <= 1.0  # the rest of the 30 lines trained
    assert len(held_out["flagged"]) == held_out["extortion"] and all(i.startswith("reviews:") for i in held_out["flagged"])
    assert summary["eval_sets"]["blind"]["n"] == 12 and (out / "eval" / "eval-blind" / "report.md").exists()
    assert "test" in summary and card.index("## Headline: independent evaluation sets") < card.index("## Test metrics")
    assert f"| blind | 12 | {summary['eval_sets']['blind']['macro_f1']:.3f} |" in card
    assert "## Recipe tries\n\n| try | dev macro-F1 |" in card
    if held_out["flagged"]:
        assert "reviews`: lines " + held_out["flagged"][0].split(":")[1] in card

    from transformers import pipeline

    scored = pipeline("text-classification", model=str(out), device="cpu")("不给钱")
    assert scored[0]["label"] in LABELS
    classifier = ExtortionClassifier.from_pretrained(out, device="cpu")
    assert classifier.max_length == 32 and classifier.version == "model"
    assert saved["extortion_guard_role_marker"] == classifier.role_marker == "seller"
    assert saved["extortion_guard_extortion_logit_shift"] == summary["extortion_logit_shift"] >= 0
    assert f"the extortion logit is lowered by {summary['extortion_logit_shift']:g}, the shift in [0, 3]" in card
    assert ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu").role_marker == "none"  # models from before read no marker


def test_training_refuses_invalid_data_with_file_and_line(tmp_path, tiny_model_dir):
    records = synthetic_records(10)
    records[4]["label"] = "threat"
    data = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(InvalidDataError, match=rf"{data}:5: 'label' must be one of"):
        train(
            TrainConfig(
                data=[str(data)],
                frozen_test=None,
                challenge=[],
                sources=None,
                base=str(tiny_model_dir),
                out=str(tmp_path / "m"),
                device="cpu",
            )
        )
    assert not (tmp_path / "m").exists()


def test_keep_layers_keeps_evenly_spaced_layers_with_their_weights():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from training.trainer import keep_layers

    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=16)
    )
    first, last = model.bert.encoder.layer[0], model.bert.encoder.layer[3]
    keep_layers(model, 2)
    assert model.config.num_hidden_layers == 2 and list(model.bert.encoder.layer) == [first, last]
    assert model(input_ids=torch.ones(1, 5, dtype=torch.long)).logits.shape == (1, 2)
    with pytest.raises(ValueError, match="num_layers"):
        keep_layers(model, 3)


def test_training_only_the_top_layers_keeps_the_lower_ones_and_the_embeddings(tmp_path, tiny_model_dir, monkeypatch):
    from safetensors.torch import load_file

    import training.trainer as trainer_module

    # Record the mode each part runs in during training: frozen layers as at inference (no dropout), the top one training.
    modes = {"frozen": set(), "trained": set()}
    freeze = trainer_module.train_top_layers_only

    def spy(model, count):
        frozen = freeze(model, count)
        frozen[-1].register_forward_hook(lambda module, *_: modes["frozen"].add(module.training))
        model.base_model.encoder.layer[-1].register_forward_hook(lambda module, *_: modes["trained"].add(module.training))
        return frozen

    monkeypatch.setattr(trainer_module, "train_top_layers_only", spy)
    out = tmp_path / "model"
    train(
        TrainConfig(
            data=[str(write_jsonl(tmp_path / "train.jsonl", synthetic_records(64)))],
            frozen_test=None,
            challenge=[],
            sources=None,
            base=str(tiny_model_dir),
            out=str(out),
            trained_layers=1,
            epochs=1,
            batch_size=16,
            learning_rate=1e-2,
            max_length=32,
            device="cpu",
            precision="fp32",
            save_dtype="float32",
        )
    )
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {name for name in before if not before[name].equal(after[name])}
    assert changed and not [n for n in changed if "embeddings" in n or "layer.0." in n]
    assert any("layer.1." in n for n in changed) and any("classifier" in n for n in changed)
    assert "Only the top 1 encoder layers" in (out / "README.md").read_text()
    assert modes == {"frozen": {False}, "trained": {True}}


def test_distillation_makes_a_smaller_student_follow_the_teacher_not_the_labels(tmp_path, tiny_model_dir):
    """A teacher trained on shifted labels; a 1-layer student trained on the true labels with only the distillation loss."""
    import numpy as np

    records = synthetic_records(96)
    shifted = [{**r, "label": LABELS[(LABELS.index(r["label"]) + 1) % 4]} for r in records]
    settings = dict(
        frozen_test=None,
        challenge=[],
        sources=None,
        augment_share=0.0,
        epochs=8,
        early_stopping_patience=8,
        batch_size=16,
        learning_rate=1e-3,
        max_length=32,
        device="cpu",
        precision="fp32",
    )
    teacher = tmp_path / "teacher"
    train(TrainConfig(data=[str(write_jsonl(tmp_path / "shifted.jsonl", shifted))], base=str(tiny_model_dir), out=str(teacher), **settings))
    student = tmp_path / "student"
    train(
        TrainConfig(
            data=[str(write_jsonl(tmp_path / "true.jsonl", records))],
            base=str(tiny_model_dir),
            out=str(student),
            num_layers=1,
            teacher=str(teacher),
            distill_weight=1.0,
            **settings,
        )
    )

    assert json.loads((student / "config.json").read_text())["num_hidden_layers"] == 1
    assert f"Distilled from `{teacher}`" in (student / "README.md").read_text()
    texts = [r["text"] for r in records]
    teacher_labels = ExtortionClassifier.from_pretrained(teacher, device="cpu").predict_proba(texts).argmax(1)
    student_labels = ExtortionClassifier.from_pretrained(student, device="cpu").predict_proba(texts).argmax(1)
    true_labels = np.array([LABELS.index(r["label"]) for r in records])
    assert np.mean(student_labels == teacher_labels) > 0.6 > np.mean(student_labels == true_labels)


def test_extortion_logit_shift_maximises_macro_f1():
    import numpy as np

    from training.trainer import extortion_logit_shift

    ext, normal = LABELS.index("extortion"), LABELS.index("normal")
    logits = np.zeros((4, 4), dtype=np.float32)
    logits[:, ext] = [3.0, 2.0, 1.0, 0.5]  # the two strongest are extortion, the weaker two normal
    logits[:, normal] = 0.1  # the runner-up everywhere
    labels = np.array([ext, ext, normal, normal])
    assert extortion_logit_shift(logits, labels) == 0.95  # the smallest shift that takes 1.0 below normal's 0.1 (a tie stays extortion)
    assert extortion_logit_shift(logits, np.array([ext] * 4)) == 0.0  # every message is extortion: no shift helps
    assert extortion_logit_shift(logits, np.array([normal] * 4), largest=3.5) == 2.95  # nothing is extortion: shift them all away


def test_the_precision_rule_takes_the_smallest_shift_that_reaches_the_target():
    import numpy as np

    from training.operating_point import extortion_logit_shift, shift_curve

    ext, normal = LABELS.index("extortion"), LABELS.index("normal")
    logits = np.zeros((5, 4), dtype=np.float32)
    logits[:, ext] = [3.0, 2.0, 1.5, 1.0, 0.5]
    logits[:, normal] = 0.1
    labels = np.array([ext, normal, ext, normal, normal])  # precision 2/5 unshifted, 2/4 past 0.4, 2/3 past 0.9, ...
    assert extortion_logit_shift(logits, labels, rule="tuning-precision", target_precision=0.6) == 0.95
    assert extortion_logit_shift(logits, labels, rule="tuning-precision", target_precision=1.0) == 1.95  # only the 3.0 is left
    assert extortion_logit_shift(logits, labels) == 0.95  # macro-F1 prefers full recall at 2/3 over precision 1 at half the recall
    no_extortion = np.array([normal] * 5)  # precision never reaches the target: the highest macro-F1 instead
    assert extortion_logit_shift(logits, no_extortion, rule="tuning-precision") == extortion_logit_shift(logits, no_extortion)
    point = next(p for p in shift_curve(logits, labels) if p["shift"] == 0.95)
    assert point["extortion_precision"] == pytest.approx(2 / 3) and point["extortion_recall"] == 1.0


def test_a_hard_case_counts_like_copies_of_itself():
    import torch

    from model.data_format import Message
    from training.data import is_hard_case
    from training.trainer import weighted_cross_entropy

    missed = Message("加个微信，转三百就删", id="a", label="extortion", tags=("round:r1", "model:normal"))
    caught = Message("加个微信，转三百就删", id="b", label="extortion", tags=("round:r1", "model:extortion"))
    assert is_hard_case(missed) and not is_hard_case(caught) and not is_hard_case(Message("好评", label="normal"))

    logits, labels, class_w = torch.randn(3, 4), torch.tensor([0, 2, 3]), torch.tensor([2.0, 1.0, 0.5, 1.0])
    plain = torch.nn.functional.cross_entropy(logits, labels, weight=class_w, label_smoothing=0.1)
    assert torch.isclose(weighted_cross_entropy(logits, labels, class_w, label_smoothing=0.1), plain)
    # weight 3 on the first message is the same loss as the first message three times
    tripled = weighted_cross_entropy(logits, labels, class_w, torch.tensor([3.0, 1.0, 1.0]))
    copies = torch.nn.functional.cross_entropy(logits[[0, 0, 0, 1, 2]], labels[[0, 0, 0, 1, 2]], weight=class_w)
    assert torch.isclose(tripled, copies)


def test_training_with_hard_case_weights_and_label_smoothing(tmp_path, tiny_model_dir):
    records = synthetic_records(60)
    for record in records[::5]:
        record["tags"] = ["model:normal" if record["label"] != "normal" else "model:complaint"]
    data = write_jsonl(tmp_path / "train.jsonl", records)
    config = TrainConfig(
        data=[str(data)],
        frozen_test=None,
        challenge=[],
        eval_sets=[],
        sources=None,
        base=str(tiny_model_dir),
        out=str(tmp_path / "model"),
        epochs=1,
        batch_size=16,
        max_length=32,
        hard_case_weight=3.0,
        label_smoothing=0.1,
        device="cpu",
        precision="fp32",
    )
    from transformers import AutoTokenizer

    from model.data_format import read_messages
    from training.data import to_dataset

    messages = read_messages([str(data)])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    weights = to_dataset(messages, tokenizer, 32, "evasion-v1", hard_case_weight=3.0)["weight"]
    assert weights == [3.0 if i % 5 == 0 else 1.0 for i in range(len(messages))]
    assert "weight" not in to_dataset(messages, tokenizer, 32, "evasion-v1").column_names  # weight 1: the plain loss

    summary = train(config)  # the Trainer passes the weight column to the loss, not to the model
    assert summary["dev"]["n"] > 0
    assert json.loads((tmp_path / "model" / "train_config.json").read_text())["hard_case_weight"] == 3.0
    with pytest.raises(ValueError, match="label_smoothing"):
        train(TrainConfig(**{**config.to_dict(), "label_smoothing": 1.0}))


@pytest.mark.parametrize("rule", ["dev-macro-f1", "tuning-precision"])
def test_the_operating_point_is_tuned_on_its_messages_labels_in_the_order_of_the_predictions(tmp_path, tiny_model_dir, monkeypatch, rule):
    import numpy as np
    import torch

    import training.trainer
    from model.labels import LABEL2ID
    from training.data import corpus_for

    seen = {}

    def remember(logits, labels, **kwargs):
        seen.update(logits=logits, labels=labels, **kwargs)
        return 0.0

    monkeypatch.setattr(training.trainer, "extortion_logit_shift", remember)
    # lengths from 3 to 48 characters: an evaluation sampler that groups by length reorders the messages
    records = [{**r, "text": r["text"] * (1 + i % 4)} for i, r in enumerate(synthetic_records(200, seed=3))]
    data = write_jsonl(tmp_path / "train.jsonl", records[:150])
    (tmp_path / "tuning").mkdir()
    write_jsonl(tmp_path / "tuning" / "a.jsonl", records[150:])
    config = TrainConfig(
        data=[str(data)],
        frozen_test=None,
        challenge=[],
        eval_sets=[],
        tuning_sets=[str(tmp_path / "tuning")],
        sources=None,
        base=str(tiny_model_dir),
        out=str(tmp_path / "model"),
        epochs=1,
        batch_size=16,
        learning_rate=1e-3,
        max_length=64,
        tune_extortion_shift=rule,
        target_extortion_precision=0.9,
        save_dtype="float32",
        device="cpu",
        precision="fp32",
    )
    train(config)
    corpus = corpus_for(config)
    tuned_messages = corpus.dev if rule == "dev-macro-f1" else corpus.tuning
    assert seen["rule"] == rule and seen["target_precision"] == 0.9
    in_order = ExtortionClassifier.from_pretrained(tmp_path / "model", device="cpu").predict_proba(tuned_messages)  # keeps the input order
    tuned_on = torch.softmax(torch.from_numpy(seen["logits"]), -1).numpy()

    # each row of logits the shift was tuned on must sit beside its own message's label
    labels = np.array([LABEL2ID[m.label] for m in tuned_messages])
    nearest = np.abs(tuned_on[:, None, :] - in_order[None, :, :]).sum(-1).argmin(1)
    assert len(tuned_on) == len(tuned_messages) and np.abs(tuned_on - in_order[nearest]).max() < 1e-4  # every row is one of theirs
    assert (labels[nearest] == np.asarray(seen["labels"])).all()
