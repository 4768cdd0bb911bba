"""Integration: the default model shipped in model/default loads and gets canonical messages right."""

import pytest

from model.classifier import DEFAULT_MODEL_DIR, ExtortionClassifier, model_version

BUYER_DEMAND = [{"role": "buyer", "text": "杯子有划痕，给我800我就不写差评"}, {"role": "seller", "text": "亲，我们可以给您退款或者换新"}]

CANONICAL = [
    ("不给钱就给差评", [], "extortion"),
    ("转我500，我就把差评删了", [], "extortion"),
    ("差评已经写好了，不给我一千我就再找十个人一起来刷", [], "extortion"),
    ("想店铺平安就拿钱，你懂的", [], "extortion"),
    ("不给hb就cp，自己看着办", [], "extortion"),
    ("给我转5佰，不然差*评", [], "extortion"),
    ("最少800，少一分都不删", BUYER_DEMAND, "extortion"),
    ("钱呢？", BUYER_DEMAND, "extortion"),
    ("不给退款我就给差评", [], "coercion"),
    ("今天再不发货我就投诉到平台", [], "coercion"),
    ("不给换新的我就打12315投诉你们", [], "coercion"),
    ("卖假货，假一赔三，不赔我就去工商举报", [], "coercion"),
    ("质量太差了，我要退货", [], "complaint"),
    ("已经给差评了，太失望了", [], "complaint"),
    ("用了三天就坏了，退款吧", [], "complaint"),
    ("快递太慢了，等了一个星期还没到", [], "complaint"),
    ("亲，您的快递已经发出了，请注意查收", [], "normal"),
    ("这双鞋37码有货吗？", [], "normal"),
    ("好的，谢谢老板", [], "normal"),
    ("老板便宜点呗，200卖不卖", [], "normal"),
    ("好评已给，五星！", [], "normal"),
    ("在吗", [], "normal"),
]


@pytest.fixture(scope="module")
def shipped():
    return ExtortionClassifier.from_pretrained(DEFAULT_MODEL_DIR, device="cpu")


def test_shipped_folder_is_safetensors_and_small():
    weights = list(DEFAULT_MODEL_DIR.glob("*.safetensors"))
    assert weights and not list(DEFAULT_MODEL_DIR.glob("*.bin")) and not list(DEFAULT_MODEL_DIR.glob("*.pt"))
    assert sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir() if p.is_file()) <= 80 * 2**20
    card = (DEFAULT_MODEL_DIR / "README.md").read_text(encoding="utf-8")
    assert card.count("| extortion |") >= 2
    assert f"# Extortion Guard classifier `{model_version(DEFAULT_MODEL_DIR)}`" in card  # its version, not the folder's name


def test_canonical_messages(shipped):
    predictions = shipped.predict([{"text": text, "context": context} for text, context, _ in CANONICAL])
    wrong = [(text, expected, p.label) for (text, _, expected), p in zip(CANONICAL, predictions, strict=True) if p.label != expected]
    assert not wrong, wrong


def test_transformers_pipeline_loads_it():
    from transformers import pipeline

    result = pipeline("text-classification", model=str(DEFAULT_MODEL_DIR), device="cpu")("不给钱就给差评")
    assert result[0]["label"] == "extortion"


def test_shipped_first_stage_passed_its_gate_and_passes_only_ordinary_chat():
    from model.classifier import as_message
    from model.first_stage import FirstStage

    stage = FirstStage.approved(DEFAULT_MODEL_DIR)
    assert stage is not None, "the shipped first stage is missing or did not pass its gate (extortion-guard cascade fit)"
    passed = stage.passes(stage.predict_proba([as_message({"text": t, "context": c}) for t, c, _ in CANONICAL]))
    assert not any(p for p, (_, _, label) in zip(passed, CANONICAL, strict=True) if label != "normal")
    assert any(passed)
