"""The cascade's first stage: fit, calibrate, save and load; and `batch --cascade`, where it passes messages."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from model.classifier import ExtortionClassifier
from model.data_format import Message, Turn
from model.first_stage import WEIGHTS, CascadeClassifier, FirstStage, FirstStageSettings
from serve.batch import BatchConfig, run_local

ORDINARY = ["在吗", "什么时候发货", "好的谢谢", "快递到哪了", "有没有优惠", "亲在的", "收到了", "几天能到"]
THREATS = ["不给钱就差评", "转我三百删差评", "给红包不然差评", "不赔钱就一直差评"]


def labelled(copies: int = 5) -> tuple[list[Message], list[str]]:
    messages = [Message(f"{t}{i}") for t in ORDINARY for i in range(copies)] + [Message(f"{t}{i}") for t in THREATS for i in range(copies)]
    return messages, ["normal"] * (len(ORDINARY) * copies) + ["extortion"] * (len(THREATS) * copies)


def small_settings() -> FirstStageSettings:
    return FirstStageSettings(n_features=2**10)


def test_fit_learns_ordinary_from_threats_and_never_predicts_unseen_labels():
    messages, labels = labelled()
    stage = FirstStage.fit(messages, labels, small_settings())
    probs = stage.predict_proba([Message("在吗亲"), Message("不给钱就差评啊")])
    assert probs[0, 3] > 0.5 > probs[1, 3]  # LABELS order: extortion, coercion, complaint, normal
    assert probs[:, 1:3].max() < 1e-3  # coercion and complaint were never seen
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


def test_context_is_a_feature():
    stage = FirstStage.fit(
        [Message("好的", (Turn("buyer", "不给钱就差评"),))] * 5 + [Message("好的", (Turn("seller", "明天发货"),))] * 5,
        ["extortion"] * 5 + ["normal"] * 5,
        small_settings(),
    )
    after_threat, after_logistics = stage.predict_proba(
        [Message("好的", (Turn("buyer", "不给钱就差评"),)), Message("好的", (Turn("seller", "明天发货"),))]
    )
    assert after_threat[0] > 0.5 > after_logistics[0]


@pytest.mark.parametrize("max_loss", [0.0, 0.25])
def test_calibration_passes_at_most_the_allowed_share_of_caught_extortion(max_loss):
    messages, labels = labelled()
    stage = FirstStage.fit(messages, labels, small_settings())
    probs = stage.predict_proba(messages)
    stage.calibrate(messages, labels, labels, max_loss)
    caught_extortion = np.array(labels) == "extortion"
    passed = stage.passes(probs)
    assert passed[caught_extortion].sum() <= int(max_loss * caught_extortion.sum())
    assert stage.settings.calibration["passed_share"] == pytest.approx(passed.mean(), abs=1e-4)
    assert stage.settings.calibration["caught_extortion_passed"] == f"{passed[caught_extortion].sum()} of {caught_extortion.sum()}"


@pytest.mark.parametrize("max_loss", [-0.1, 1.0])
def test_calibration_refuses_a_loss_that_is_not_a_share(max_loss):
    messages, labels = labelled()
    stage = FirstStage.fit(messages, labels, small_settings())
    with pytest.raises(ValueError, match=f"max_extortion_loss.*{max_loss}"):
        stage.calibrate(messages, labels, labels, max_loss)


def test_save_and_load_keep_the_predictions(tmp_path):
    messages, labels = labelled()
    stage = FirstStage.fit(messages, labels, small_settings())
    stage.calibrate(messages, labels, labels, 0.0)
    stage.save(tmp_path)
    loaded = FirstStage.load(tmp_path)
    np.testing.assert_allclose(loaded.predict_proba(messages), stage.predict_proba(messages), atol=2e-3)  # weights kept as float16
    assert loaded.settings.threshold == stage.settings.threshold
    assert json.loads((tmp_path / "first_stage.json").read_text())["calibration"]["messages"] == len(messages)


def test_a_model_without_a_first_stage_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*{WEIGHTS}.*cascade fit"):
        FirstStage.load(tmp_path)


def test_cascade_scores_only_escalated_messages_with_the_full_model(tiny_model_dir):
    messages, labels = labelled()
    stage = FirstStage.fit(messages, labels, small_settings())
    stage.settings.threshold = 0.5
    full = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu")
    cascade = CascadeClassifier(full, stage)
    asked = [Message("在吗亲"), Message("不给钱就差评啊"), Message("收到了谢谢")]
    timings: dict = {}
    probs, truncated = cascade.score(asked, 8, timings)
    first = stage.predict_proba(asked)
    passed = stage.passes(first)
    assert passed.tolist() == [True, False, True]
    np.testing.assert_allclose(probs[passed], first[passed])
    np.testing.assert_allclose(probs[~passed], full.score([asked[1]], 8)[0], atol=1e-5)
    assert (timings["passed"], timings["escalated"]) == (2, 1) and len(truncated) == 3
    np.testing.assert_allclose(cascade.predict_proba(asked), probs, atol=1e-5)  # the evaluation's way in, the same scores
    assert cascade.version == full.version


def test_batch_with_cascade_keeps_every_row_and_counts_the_passed(tiny_model_dir, tmp_path):
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    messages, labels = labelled()
    stage = FirstStage.fit(messages, labels, small_settings())
    stage.settings.threshold = 0.5
    stage.save(model_dir)
    rows = [
        {"message_id": f"m{i}", "conversation_id": "c1", "text": text}
        for i, text in enumerate(["在吗亲", "不给钱就差评啊", "收到了谢谢", "", "快递到哪了"])
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    config = BatchConfig(
        [str(tmp_path / "log.jsonl")], str(tmp_path / "out"), model=str(model_dir), quiet=True, precision="fp32", cascade="on"
    )
    summary = run_local(config)
    predictions = pq.read_table(tmp_path / "out" / "predictions.parquet")
    assert summary["rows_in"] == 5 == predictions.num_rows + 1  # the empty text is an error row
    cascade = summary["cascade"]
    assert cascade["passed_by_first_stage"] + cascade["scored_by_model"] == 4
    assert cascade["passed_by_first_stage"] >= 1 and cascade["scored_by_model"] >= 1
    assert "passed" not in summary["seconds_by_stage"] and "first_stage" in summary["seconds_by_stage"]


@pytest.mark.parametrize(
    ("gate", "cascade", "used"), [(True, "auto", True), (False, "auto", False), (True, "off", False), (False, "on", True)]
)
def test_auto_uses_only_a_first_stage_that_passed_the_gate(tiny_model_dir, tmp_path, gate, cascade, used):
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    stage = FirstStage.fit(*labelled(), small_settings())
    stage.settings.threshold, stage.settings.calibration["gate"] = 0.5, {"passes": gate}
    stage.save(model_dir)
    (tmp_path / "log.jsonl").write_text('{"text": "在吗亲"}\n{"text": "不给钱就差评啊"}\n', encoding="utf-8")
    config = BatchConfig(
        [str(tmp_path / "log.jsonl")], str(tmp_path / "out"), model=str(model_dir), quiet=True, precision="fp32", cascade=cascade
    )
    assert ("cascade" in run_local(config)) == used


def test_batch_with_cascade_refuses_a_model_without_a_first_stage(tiny_model_dir, tmp_path):
    (tmp_path / "log.jsonl").write_text('{"text": "在吗"}\n', encoding="utf-8")
    config = BatchConfig(
        [str(tmp_path / "log.jsonl")], str(tmp_path / "out"), model=str(tiny_model_dir), quiet=True, precision="fp32", cascade="on"
    )
    with pytest.raises(FileNotFoundError, match="cascade fit"):
        run_local(config)


def test_api_answers_sure_normal_messages_with_the_first_stage_and_evidence_with_the_model(tiny_model_dir):
    from fastapi.testclient import TestClient

    from serve.api import create_api

    stage = FirstStage.fit(*labelled(), small_settings())
    stage.settings.threshold = 0.5
    full = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu")
    client = TestClient(create_api(full, first_stage=stage))
    body = {"messages": [{"text": "在吗亲"}, {"text": "不给钱就差评啊"}]}
    results = client.post("/v1/classify", json=body).json()["results"]
    assert [r["decided_by"] for r in results] == ["first_stage", "model"]
    assert results[0]["probabilities"]["normal"] == pytest.approx(float(stage.predict_proba([Message("在吗亲")])[0, 3]), abs=1e-5)
    assert results[1]["probabilities"]["extortion"] == pytest.approx(full.predict("不给钱就差评啊").probabilities["extortion"], abs=1e-5)
    explained = client.post("/v1/classify", json={**body, "evidence": True}).json()["results"]
    assert [r["decided_by"] for r in explained] == ["model", "model"]  # evidence explains the model's own label


def test_a_first_stage_judged_with_other_weights_is_not_used(tiny_model_dir, tmp_path):
    from model.classifier import model_version

    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    stage = FirstStage.fit(*labelled(), small_settings())
    for judged_with, used in (("some-older-model", False), (model_version(model_dir), True)):
        stage.settings.calibration = {"gate": {"passes": True}, "model_version": judged_with}
        stage.save(model_dir)
        assert (FirstStage.approved(model_dir) is not None) == used
