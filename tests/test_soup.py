import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from model.classifier import ExtortionClassifier
from model.labels import LABEL2ID
from serve.cli import main
from tests.conftest import save_tiny_model, write_jsonl
from tests.test_training import synthetic_records
from training.operating_point import classification_head
from training.soup import average_weights
from training.training_args import TrainConfig

EXTORTION = LABEL2ID["extortion"]


def tiny_settings(data, out, **changes) -> TrainConfig:
    """The data and settings a tiny test model was 'trained' with: what a soup or a retune is judged on."""
    fixed = {"frozen_test": None, "challenge": [], "eval_sets": [], "tuning_sets": [], "sources": None, "base": "tiny"}
    return TrainConfig(
        data=[str(data)],
        out=str(out),
        max_length=32,
        device="cpu",
        precision="fp32",
        tune_extortion_shift="dev-macro-f1",
        **fixed | changes,
    )


def shifted_copy(source, target, shift):
    """``source``'s model saved to ``target`` as training saves one with an operating point: the extortion bias lowered by ``shift``."""
    model = AutoModelForSequenceClassification.from_pretrained(str(source))
    with torch.no_grad():
        classification_head(model).bias[EXTORTION] -= shift
    model.config.extortion_guard_extortion_logit_shift = shift
    model.save_pretrained(target)
    return target


def test_average_is_the_weighted_mean_of_the_weights_as_trained(tmp_path):
    first_raw, second = save_tiny_model(tmp_path / "first-raw", seed=0), save_tiny_model(tmp_path / "second", seed=1)
    first = shifted_copy(first_raw, tmp_path / "first", shift=0.7)
    as_trained = [AutoModelForSequenceClassification.from_pretrained(str(p)) for p in (first_raw, second)]

    averaged = average_weights([first, second], [0.25, 0.75])

    for name, tensor in averaged.state_dict().items():
        if tensor.is_floating_point():  # the head's bias included: first's shift is undone before averaging
            expected = 0.25 * as_trained[0].state_dict()[name] + 0.75 * as_trained[1].state_dict()[name]
            torch.testing.assert_close(tensor, expected)
    assert getattr(averaged.config, "extortion_guard_extortion_logit_shift", None) is None


def test_several_models_average_in_equal_shares_by_default(tmp_path):
    paths = [save_tiny_model(tmp_path / f"m{seed}", seed=seed) for seed in range(3)]
    states = [AutoModelForSequenceClassification.from_pretrained(str(p)).state_dict() for p in paths]

    averaged = average_weights(paths).state_dict()

    name = next(n for n, t in averaged.items() if t.is_floating_point() and t.dim() == 2)
    torch.testing.assert_close(averaged[name], sum(s[name] for s in states) / 3)
    assert not torch.allclose(averaged[name], states[2][name])


def test_models_of_different_shapes_are_refused_by_name(tmp_path, capsys):
    small = save_tiny_model(tmp_path / "small", max_length=64)
    longer = save_tiny_model(tmp_path / "longer", max_length=128)  # more position embeddings
    with pytest.raises(ValueError, match=r"position_embeddings.*same base"):
        average_weights([small, longer])
    with pytest.raises(ValueError, match="weights must be one non-negative number per model summing to 1"):
        average_weights([small, small], [1.5, -0.5])
    with pytest.raises(ValueError, match="at least two models"):
        average_weights([small])
    assert main(["models", "average", str(small), str(tmp_path / "missing"), "--out", str(tmp_path / "soup")]) == 2
    assert "missing: not a model folder" in capsys.readouterr().err
    assert main(["models", "average", str(small), str(small), "--weights", "0.5", "--out", str(tmp_path / "soup")]) == 2
    assert "weights must be one non-negative number per model" in capsys.readouterr().err


def test_a_soup_gets_its_own_operating_point_evaluation_card_and_comparison(tmp_path, capsys):
    first, second = save_tiny_model(tmp_path / "first", seed=0), save_tiny_model(tmp_path / "second", seed=1)
    data = write_jsonl(tmp_path / "data.jsonl", synthetic_records(80))
    trained_with = tiny_settings(data, second)
    (second / "train_config.json").write_text(json.dumps(trained_with.to_dict()))  # the data and settings the soup is judged on
    out = tmp_path / "soup"

    assert main(["models", "average", str(first), str(second), "--out", str(out), "--compare-with", str(first), "--device", "cpu"]) == 0

    summary = json.loads((out / "train_metrics.json").read_text())
    saved = json.loads((out / "config.json").read_text())
    assert saved["extortion_guard_extortion_logit_shift"] == summary["extortion_logit_shift"] >= 0.0
    assert saved["extortion_guard_version"] == "soup" and summary["dev"]["n"] > 0
    assert "0.5 × `first` + 0.5 × `second`" in (out / "README.md").read_text()
    assert json.loads((out / "comparison.json").read_text())["parent_path"] == str(first)  # what `models promote` judges
    assert "against first:" in capsys.readouterr().out
    ExtortionClassifier.from_pretrained(out, device="cpu").predict("不给钱就差评")


def test_retune_gives_a_trained_model_a_new_operating_point_and_changes_nothing_else(tmp_path, capsys):
    raw = save_tiny_model(tmp_path / "raw", seed=0)
    model = shifted_copy(raw, tmp_path / "model", shift=0.7)
    data = write_jsonl(tmp_path / "data.jsonl", synthetic_records(80))
    tuning = tmp_path / "tuning"
    tuning.mkdir()
    write_jsonl(tuning / "writer-a.jsonl", [{**r, "id": f"tune-{i}"} for i, r in enumerate(synthetic_records(40, seed=5))])
    trained_with = tiny_settings(data, model, tuning_sets=[str(tuning)])
    (model / "train_config.json").write_text(json.dumps(trained_with.to_dict()))
    out = tmp_path / "retuned"

    def retune(out_dir, *rule) -> int:
        return main(["models", "retune", str(model), "--out", str(out_dir), "--device", "cpu", *rule])

    assert retune(out, "--tune-extortion-shift", "tuning-precision", "--target-extortion-precision", "0.3") == 0

    summary = json.loads((out / "train_metrics.json").read_text())
    shift = json.loads((out / "config.json").read_text())["extortion_guard_extortion_logit_shift"]
    assert shift == summary["extortion_logit_shift"] and summary["tuning"]["n"] == 40 and summary["retuned_from"] == "model"
    before = AutoModelForSequenceClassification.from_pretrained(str(raw)).state_dict()
    after = AutoModelForSequenceClassification.from_pretrained(str(out)).state_dict()
    bias = classification_head(AutoModelForSequenceClassification.from_pretrained(str(raw))).bias
    for name, tensor in after.items():  # weights as trained (stored as float16), the extortion bias lowered by the new shift
        expected = before[name].clone()
        if tensor.shape == bias.shape and torch.equal(before[name], bias):
            expected[EXTORTION] -= shift
        torch.testing.assert_close(tensor, expected, atol=2e-3, rtol=1e-3)
    card = (out / "README.md").read_text()
    assert "with a new operating point" in card and "extortion precision on the tuning sets reaches 0.3" in card

    (model / "train_config.json").write_text(json.dumps({**trained_with.to_dict(), "tuning_sets": [str(tmp_path / "none")]}))
    assert retune(tmp_path / "again", "--tune-extortion-shift", "tuning-macro-f1") == 2
    assert "needs tuning sets" in capsys.readouterr().err
