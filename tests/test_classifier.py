import numpy as np
import pytest

from model.classifier import ExtortionClassifier, Prediction
from model.labels import LABELS


@pytest.fixture(scope="module")
def classifier(tiny_model_dir):
    return ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu")


def test_single_string_gives_one_prediction(classifier):
    prediction = classifier.predict("不给钱就差评")
    assert isinstance(prediction, Prediction)
    assert prediction.label in LABELS
    assert set(prediction.probabilities) == set(LABELS)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)


def test_batches_sorted_by_length_come_back_in_input_order(classifier):
    texts = ["在吗", "不给钱就差评" * 5, "好的", "我要投诉你们这个快递太慢了", "退款"]
    together = classifier.predict_proba(texts, batch_size=2)
    one_by_one = np.stack([classifier.predict_proba(t) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_repeated_inputs_are_scored_once_and_each_row_gets_its_own_copy(tiny_model_dir):
    classifier = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu")
    rows_scored = []
    forward = classifier.model.forward
    classifier.model.forward = lambda **inputs: rows_scored.append(len(inputs["input_ids"])) or forward(**inputs)
    # "好的" twice, once full-width (preparation makes it the same input); "钱呢" with and without context differ
    items = ["好的", {"text": "钱呢"}, "好的", "ｈｂ好的", {"text": "钱呢", "context": [{"role": "buyer", "text": "不然差评"}]}, "hb好的"]
    together = classifier.predict_proba(items, batch_size=2)
    assert sum(rows_scored) == 4
    one_by_one = np.stack([classifier.predict_proba(item) for item in items])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_records_with_context_differ_from_text_alone(classifier):
    alone = classifier.predict_proba({"text": "钱呢"})
    with_context = classifier.predict_proba({"text": "钱呢", "context": [{"role": "buyer", "text": "给我转账不然差评"}]})
    assert not np.allclose(alone, with_context)


def test_ids_and_truncation_are_reported(classifier):
    out = classifier.predict([{"id": "m1", "text": "差" * 500}, {"id": "m2", "text": "好的"}])
    assert [(p.id, p.truncated) for p in out] == [("m1", True), ("m2", False)]


@pytest.mark.parametrize("bad", ["", "   \n", {"text": ""}, {"context": []}])
def test_empty_or_missing_text_is_an_error_not_a_guess(classifier, bad):
    with pytest.raises(ValueError, match="text"):
        classifier.predict(bad)


def test_model_with_other_labels_is_refused(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from tests.conftest import tiny_tokenizer

    config = BertConfig(vocab_size=80, hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=16, num_labels=2)
    with pytest.raises(ValueError, match="not the expected"):
        ExtortionClassifier(BertForSequenceClassification(config), tiny_tokenizer(), device="cpu")


def test_onnx_runtime_gives_the_same_scores_at_any_batch_size_and_length(tiny_model_dir):
    plain = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu", precision="fp32")
    fast = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu", precision="fp32")
    assert fast.use_onnx_runtime()
    one = "不给钱就差评"
    with_context = {"text": "钱呢", "context": [{"role": "buyer", "text": "给我转账不然差评"}, {"role": "seller", "text": "亲，什么问题"}]}
    many = [f"第{i}单，返现{i}元，不然差评" * (1 + i % 7) for i in range(80)]  # many lengths, batches of 64 and 16
    assert fast.predict_proba(one) == pytest.approx(plain.predict_proba(one), abs=1e-5)
    assert fast.predict_proba(with_context) == pytest.approx(plain.predict_proba(with_context), abs=1e-5)
    np.testing.assert_allclose(fast.predict_proba(many), plain.predict_proba(many), atol=1e-5)
    assert fast.predict("差" * 500).truncated


def test_onnx_runtime_int8_quantises_the_float_weights_and_stays_close(tiny_model_dir):
    plain = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu", precision="fp32")
    int8 = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu", precision="int8")
    assert int8.use_onnx_runtime()
    texts = [f"第{i}单，返现{i}元，不然差评" * (1 + i % 5) for i in range(20)]
    quantised, exact = int8.predict_proba(texts), plain.predict_proba(texts)
    assert not np.array_equal(quantised, exact)  # the int8 graph ran, not the float one
    np.testing.assert_allclose(quantised, exact, atol=0.05)


def test_onnx_runtime_is_not_used_for_bf16(tiny_model_dir):
    bf16 = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu", precision="bf16")
    assert not bf16.use_onnx_runtime()
    assert bf16.onnx is None


@pytest.mark.parametrize("architecture", ["bert", "bert with segment ids", "distilbert"])
def test_onnx_graph_gives_the_model_s_logits_with_padding(architecture):
    """BERT goes through the fused classic export; other architectures through the plain one. Both must match PyTorch."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    from model import onnx_runtime

    torch.manual_seed(0)
    if architecture.startswith("bert"):
        model = BertForSequenceClassification(
            BertConfig(
                vocab_size=50,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=40,
                num_labels=4,
                initializer_range=0.5,
            )
        )
    else:
        model = DistilBertForSequenceClassification(
            DistilBertConfig(
                vocab_size=50, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=40, num_labels=4, initializer_range=0.5
            )
        )
    assert onnx_runtime.ClassicBert.fits(model) == architecture.startswith("bert")
    input_ids = torch.randint(5, 50, (3, 23))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0  # right padding, as the classifier pads
    attention_mask[2, 1:] = 0
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if architecture == "bert with segment ids":
        inputs["token_type_ids"] = (torch.arange(23) >= 12).long().expand(3, 23).contiguous()  # a message, then its context
    encoder = onnx_runtime.OnnxEncoder(model.eval(), list(inputs))
    with torch.no_grad():
        expected = model(**inputs).logits
    got = encoder(**inputs)
    assert expected.abs().max() > 0.1  # logits far enough from zero for the comparison to mean something
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_loading_prints_no_progress_bar_and_leaves_the_setting_alone(tiny_model_dir, capfd):
    from transformers.utils import logging as transformers_logging

    transformers_logging.enable_progress_bar()
    ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu")
    assert "Loading weights" not in capfd.readouterr().err
    assert transformers_logging.is_progress_bar_enabled()  # training's own bars still show


def test_onnx_runtime_is_exported_once_and_reused_after_switching_back(tiny_model_dir):
    classifier = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu", precision="fp32")
    assert classifier.use_onnx_runtime()
    first = classifier.onnx
    classifier.onnx = None  # back to PyTorch, as model.runtime does while it times the paths
    assert classifier.use_onnx_runtime() and classifier.onnx is first
