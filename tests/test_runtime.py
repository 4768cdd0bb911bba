"""--precision auto: the path is chosen by timing the paths this device offers (timings faked here; bench/ measures)."""

import numpy as np
import pytest
import torch

from model import runtime
from model.classifier import ExtortionClassifier
from model.runtime import RuntimePath, candidate_paths, choose_runtime

# Two kinds of CPU seen on these machines, and a GPU.
BF16_CPU = dict(device=torch.device("cpu"), bf16_native=True, onnx_available=True)
PLAIN_CPU = dict(device=torch.device("cpu"), bf16_native=False, onnx_available=True)


def names(paths):
    return [p.name for p in paths]


def test_candidates_follow_the_devices_features():
    assert names(candidate_paths(**BF16_CPU)[0]) == ["torch fp32", "torch bf16", "onnx fp32"]
    paths, refused = candidate_paths(**PLAIN_CPU)
    assert names(paths) == ["torch fp32", "onnx fp32"] and "no native bf16" in refused["torch bf16"]
    paths, refused = candidate_paths(torch.device("cuda"), bf16_native=True, onnx_available=True)
    assert names(paths) == ["torch fp32", "torch bf16"] and "CPU only" in refused["onnx fp32"]
    assert "int8" in candidate_paths(**PLAIN_CPU)[1]  # never picked by auto


@pytest.fixture
def classifier(tiny_model_dir):
    return ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu", precision="fp32")


def fake_timings(milliseconds: dict[str, float], calls: list):
    def measure(classifier, workload, budget):
        name = f"{'onnx' if classifier.onnx is not None else 'torch'} {classifier.precision}"
        calls.append((name, workload))
        return milliseconds[name]

    return measure


@pytest.mark.parametrize(
    "bf16_cpu, workload, timings, expected",
    [
        (True, "single", {"torch fp32": 30.0, "torch bf16": 27.0, "onnx fp32": 8.0}, "onnx fp32"),  # the server's case in the issue
        (True, "batch", {"torch fp32": 9.0, "torch bf16": 4.0, "onnx fp32": 8.5}, "torch bf16"),
        (False, "single", {"torch fp32": 30.0, "onnx fp32": 9.0}, "onnx fp32"),
        (False, "batch", {"torch fp32": 7.0, "onnx fp32": 8.0}, "torch fp32"),
    ],
)
def test_the_fastest_path_that_keeps_the_labels_is_used(classifier, tmp_path, monkeypatch, bf16_cpu, workload, timings, expected):
    monkeypatch.setattr(runtime, "native_bf16", lambda device: bf16_cpu)  # fake the CPU's features
    calls = []
    choice = choose_runtime(classifier, workload, cache=tmp_path / "runtime.json", measure=fake_timings(timings, calls))
    assert choice.path.name == expected and sorted(name for name, _ in calls) == sorted(timings)
    assert (classifier.onnx is not None) == (expected == "onnx fp32") and classifier.precision == expected.split()[1]
    reference = ExtortionClassifier.from_pretrained(classifier.model.name_or_path, device="cpu", precision="fp32")
    np.testing.assert_allclose(
        classifier.predict_proba(["在吗", "不给钱就差评"]), reference.predict_proba(["在吗", "不给钱就差评"]), atol=2e-2
    )


def test_a_cached_choice_is_reused_and_fresh_measures_again(classifier, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    calls = []
    timings = {"torch fp32": 5.0, "onnx fp32": 2.0}
    first = choose_runtime(classifier, "single", cache=tmp_path / "runtime.json", measure=fake_timings(timings, calls))
    again = choose_runtime(classifier, "single", cache=tmp_path / "runtime.json", measure=fake_timings(timings, calls))
    assert len(calls) == 2 and again.path == first.path and "measured earlier" in again.reason
    choose_runtime(classifier, "batch", cache=tmp_path / "runtime.json", measure=fake_timings(timings, calls))
    assert len(calls) == 4  # another workload is measured on its own
    choose_runtime(classifier, "single", cache=tmp_path / "runtime.json", measure=fake_timings(timings, calls), fresh=True)
    assert len(calls) == 6


def test_a_path_that_changes_labels_is_refused(classifier, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)
    score = classifier.score

    def score_with_broken_bf16(messages, batch_size=64, timings=None):
        probs, cut = score(messages, batch_size, timings)
        return (probs[:, ::-1].copy() if classifier.precision == "bf16" else probs), cut

    monkeypatch.setattr(classifier, "score", score_with_broken_bf16)
    calls = []
    timings = {"torch fp32": 9.0, "torch bf16": 1.0, "onnx fp32": 5.0}
    choice = choose_runtime(classifier, "batch", cache=tmp_path / "runtime.json", measure=fake_timings(timings, calls))
    assert choice.path == RuntimePath("onnx", "fp32") and "changed" in choice.refused["torch bf16"]
    assert "torch bf16" not in choice.milliseconds


def test_doctor_prints_each_workloads_choice(tiny_model_dir, capsys):
    from serve.cli import main

    assert main(["doctor", "--model", str(tiny_model_dir), "--device", "cpu", "--seconds", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "single: " in out and "batch: " in out and "torch fp32" in out and "int8" in out and "runtime.json" in out
    assert "first stage: none" in out  # the tiny model has none


def test_doctor_says_whether_the_first_stage_is_used(tiny_model_dir, tmp_path):
    import shutil

    from model.first_stage import FirstStage
    from serve.cli import first_stage_status
    from tests.test_first_stage import labelled, small_settings

    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    messages, labels = labelled()
    stage = FirstStage.fit(messages, labels, small_settings())
    stage.calibrate(messages, labels, labels, 0.0)
    stage.settings.calibration["gate"] = {"passes": False, "comparison": "first_stage_comparison.md"}
    stage.save(model_dir)
    assert "not used" in first_stage_status(model_dir)
    stage.settings.calibration["gate"]["passes"] = True
    stage.save(model_dir)
    status = first_stage_status(model_dir)
    assert status.startswith("first stage: used") and "0 of 20 caught extortion" in status


def test_batch_with_auto_precision_measures_and_keeps_the_labels(tiny_model_dir, tmp_path):
    import pyarrow.parquet as pq

    from serve.batch import BatchConfig, run_local
    from tests.test_batch import chat_rows, write_jsonl

    log = write_jsonl(tmp_path / "log.jsonl", chat_rows(30))
    labels = {}
    for precision in ("fp32", "auto"):
        config = BatchConfig([str(log)], str(tmp_path / precision), model=str(tiny_model_dir), precision=precision, quiet=True)
        summary = run_local(config)
        labels[precision] = pq.read_table(tmp_path / precision / "predictions.parquet").column("label").to_pylist()
    assert summary["precision"] in ("torch fp32", "torch bf16", "onnx fp32")  # the measured path is reported
    assert labels["auto"] == labels["fp32"]


def test_new_weights_in_the_same_folder_are_measured_again(tiny_model_dir, tmp_path, monkeypatch):
    import os
    import shutil

    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    calls, timings = [], {"torch fp32": 5.0, "onnx fp32": 2.0}
    for _ in range(2):
        choose_runtime(
            ExtortionClassifier.from_pretrained(folder, device="cpu"),
            "batch",
            cache=tmp_path / "r.json",
            measure=fake_timings(timings, calls),
        )
    assert len(calls) == 2  # the second load found the choice
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # retrained in place
    choose_runtime(
        ExtortionClassifier.from_pretrained(folder, device="cpu"), "batch", cache=tmp_path / "r.json", measure=fake_timings(timings, calls)
    )
    assert len(calls) == 4
