"""Retraining end to end on a tiny model: inbox with good, bad and conflicting lines; compare; promote; roll back."""

import json
import shutil

import numpy as np
import pytest

from model.classifier import DEFAULT_MODEL_DIR, ExtortionClassifier
from model.registry import current_model_dir, describe_current, read_registry
from serve.cli import main
from tests.conftest import write_jsonl
from tests.test_training import synthetic_records
from training.registry import Tolerances, _default_version, check_promotion, promote, rollback
from training.score_cache import CachedScores


def inbox_lines(corpus):
    good = [
        {
            "id": f"new-{i}",
            "text": f"新的{r['text']}{i}",
            "context": [],
            "label": r["label"],
            "moderator": "alice",
            "decided_at": f"2026-11-{10 + i % 18:02d}T10:00:00+00:00",
        }
        for i, r in enumerate(synthetic_records(30, seed=7))
    ]
    same_as_corpus = {**corpus[0], "id": "dup-1", "moderator": "bob", "decided_at": "2026-11-20T09:00:00+00:00"}
    against_corpus = {
        **corpus[1],
        "id": "clash-1",
        "label": "normal" if corpus[1]["label"] != "normal" else "extortion",
        "moderator": "bob",
        "decided_at": "2026-11-20T09:00:00+00:00",
    }
    disagree = [
        {
            "id": f"split-{who}",
            "text": "钱呢？到底给不给",
            "context": [{"role": "buyer", "text": "给我500"}],
            "label": label,
            "moderator": who,
            "decided_at": "2026-11-21T09:00:00+00:00",
        }
        for who, label in (("alice", "extortion"), ("bob", "normal"))
    ]
    return good, [same_as_corpus, against_corpus, *disagree], ["{torn line", json.dumps({"id": "x", "text": "hi", "label": "spam"})]


def test_retrain_compare_promote_rollback(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("EXTORTION_GUARD_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("EXTORTION_GUARD_CACHE", str(tmp_path / "cache"))
    corpus = synthetic_records(120)
    data = write_jsonl(tmp_path / "corpus.jsonl", corpus)
    (tmp_path / "challenge").mkdir()
    write_jsonl(tmp_path / "challenge" / "hard.jsonl", [{**r, "id": f"ch-{i}"} for i, r in enumerate(synthetic_records(8, seed=1))])
    good, tricky, bad = inbox_lines(corpus)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "2026-11-20.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good + tricky) + "\n".join(bad) + "\n"
    )
    out = tmp_path / "runs" / "candidate"
    args = [
        "retrain",
        "--inbox",
        str(inbox),
        "--out",
        str(out),
        "--parent",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--challenge",
        str(tmp_path / "challenge"),
        "--frozen-test",
        "none",
        "--sources",
        "none",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--learning-rate",
        "1e-3",
        "--max-length",
        "32",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--new-label-repeats",
        "3",
        "--replay",
        "50",
    ]
    assert main(args) == 0

    merge = json.loads((out / "inbox" / "merge.json").read_text())
    assert merge == {"accepted": 24, "held_out": 6, "duplicates": 1, "conflicts": 2, "rejected": 2}
    assert merge["accepted"] + merge["held_out"] + merge["duplicates"] + 3 + merge["rejected"] == len(good + tricky + bad)  # nothing lost
    conflicts = [json.loads(line) for line in (out / "inbox" / "conflicts.jsonl").read_text().splitlines()]
    assert sorted(c["kind"] for c in conflicts) == ["against the corpus", "moderators disagree"]
    rejected = [json.loads(line) for line in (out / "inbox" / "rejected.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [len(good + tricky) + 1, len(good + tricky) + 2] and "label" in rejected[1]["reason"]
    decided = {r["id"]: r["decided_at"] for r in good}
    held = [json.loads(line)["id"] for line in (out / "inbox" / "new_labels.jsonl").read_text().splitlines()]
    accepted = [json.loads(line)["id"] for line in (out / "inbox" / "accepted.jsonl").read_text().splitlines()]
    assert min(decided[i] for i in held) >= max(decided[i] for i in accepted)  # the newest decisions were held out

    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison["candidate"]["challenge_macro_f1"]) == {"hard", "new_labels"}
    focus = comparison["focus"]  # the new labels that reached the train split, 3 times each, beside 50 replayed
    assert focus["repeats"] == 3 and focus["replayed"] == 50 and 0 < focus["new_labels"] <= merge["accepted"]
    trained = json.loads((out / "train_metrics.json").read_text())["counts"]["train"]
    assert sum(trained.values()) == 50 + 3 * focus["new_labels"]
    assert f"{focus['new_labels']} new moderator labels, each 3 times" in (out / "README.md").read_text()
    assert comparison["parent_path"] == str(tiny_model_dir) and (out / "comparison.md").exists()
    assert comparison["parent_scores_reused"]["scored"] > 0 and list((tmp_path / "cache" / "scores").glob("*.npz"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert str(data) in manifest["data"] and any(p.endswith("accepted.jsonl") for p in manifest["data"])

    forced = not all(c["passed"] for c in comparison["checks"])
    if forced:  # a tiny random model may well regress; then promotion needs a reason
        assert main(["models", "promote", str(out)]) == 2
        assert "--force" in capsys.readouterr().err
        assert read_registry(tmp_path / "models")["current"] is None
    assert main(["models", "promote", str(out), "--force", "--reason", "test run"]) == 0
    assert current_model_dir() == tmp_path / "models" / "candidate"
    assert (tmp_path / "models" / "candidate" / "model.safetensors").exists()
    entry = read_registry(tmp_path / "models")["history"][-1]
    assert entry["forced"] == forced and (entry["reason"] == "test run") == forced
    assert main(["models", "list"]) == 0 and "* candidate" in capsys.readouterr().out
    assert main(["models", "rollback"]) == 0
    assert current_model_dir() == DEFAULT_MODEL_DIR
    assert main(["models", "rollback"]) == 2  # nothing left to roll back


def test_promotion_checks_use_the_tolerances():
    comparison = {
        "new_labels_set": "new_labels",
        "parent": {"test_macro_f1": 0.90, "challenge_macro_f1": {"hard": 0.80, "new_labels": 0.5}, "real_review_extortion_rate": 0.001},
        "candidate": {
            "test_macro_f1": 0.896,
            "challenge_macro_f1": {"hard": 0.785, "new_labels": 0.1},
            "real_review_extortion_rate": 0.001,
        },
    }
    checks = {c["name"]: c["passed"] for c in check_promotion(comparison, Tolerances())}
    assert checks == {"test macro-F1": True, "challenge hard macro-F1": False, "extortion rate on real reviews": True}
    comparison["candidate"]["real_review_extortion_rate"] = 0.002
    assert not {c["name"]: c["passed"] for c in check_promotion(comparison, Tolerances(challenge_macro_f1_drop=0.02))}[
        "extortion rate on real reviews"
    ]


def test_cached_scores_equal_fresh_ones_and_are_not_scored_again(tmp_path, tiny_model_dir):
    classifier = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu")
    messages = [{"text": "不给钱就差评"}, {"text": "钱呢", "context": [{"role": "buyer", "text": "给我500"}]}, {"text": "好的"}]
    cached = CachedScores(classifier, tiny_model_dir, root=tmp_path)
    np.testing.assert_allclose(cached.predict_proba(messages), classifier.predict_proba(messages), atol=1e-6)
    cached.save()

    scored = []

    class Counting:
        labels = classifier.labels

        def predict_proba(self, items, batch_size=64):
            scored.extend(m.text for m in items)
            return classifier.predict_proba(items, batch_size)

    other_context = {"text": "钱呢", "context": [{"role": "seller", "text": "给我500"}]}  # same words, another speaker
    again = CachedScores(Counting(), tiny_model_dir, root=tmp_path)
    probs = again.predict_proba([*messages, other_context, messages[0]])
    np.testing.assert_allclose(probs[:3], classifier.predict_proba(messages), atol=1e-6)
    assert scored == ["钱呢"] and (again.hits, again.misses) == (4, 1)
    assert again.predict_proba("好的") == pytest.approx(classifier.predict_proba("好的"), abs=1e-6)

    again.scores[b"\x01" * 15 + b"\x00"] = np.full(4, 0.25, np.float32)  # a key ending in a zero byte survives the file
    again.save()
    assert b"\x01" * 15 + b"\x00" in CachedScores(classifier, tiny_model_dir, root=tmp_path).scores

    changed = tmp_path / "changed"
    shutil.copytree(tiny_model_dir, changed)
    (changed / "config.json").write_text((changed / "config.json").read_text().replace("{", '{"note": "other weights",', 1))
    assert CachedScores(classifier, changed, root=tmp_path).scores == {}  # other weights or settings: another file


def test_rollback_returns_to_a_promoted_folder_named_like_the_shipped_default(tmp_path, monkeypatch):
    monkeypatch.setenv("EXTORTION_GUARD_MODELS", str(tmp_path / "models"))
    assert describe_current().startswith(f"shipped default model {DEFAULT_MODEL_DIR}") and str(tmp_path / "models") in describe_current()
    shipped = _default_version()
    for version in (shipped, "next"):
        run = tmp_path / "runs" / version
        run.mkdir(parents=True)
        (run / "comparison.json").write_text(json.dumps({"parent": {}, "candidate": {}}))
        promote(run, Tolerances())
    assert current_model_dir() == tmp_path / "models" / "next" and describe_current().startswith("current model next from registry")
    rollback()
    assert current_model_dir() == tmp_path / "models" / shipped  # the promoted folder, not model/default
    rollback()
    assert current_model_dir() == DEFAULT_MODEL_DIR


def _promote_in_another_process(run, models):
    import os

    os.environ["EXTORTION_GUARD_MODELS"] = models
    from pathlib import Path

    from training.registry import Tolerances, promote

    promote(Path(run), Tolerances())


def test_two_promotions_at_once_both_land_in_the_registry(tmp_path, monkeypatch):
    import multiprocessing

    monkeypatch.setenv("EXTORTION_GUARD_MODELS", str(tmp_path / "models"))
    runs = []
    for name in ("left", "right"):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "comparison.json").write_text(json.dumps({"parent": {}, "candidate": {}}))
        (run / "model.safetensors").write_bytes(b"\0" * 2_000_000)  # copying takes a moment, so the two overlap
        runs.append(run)
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=_promote_in_another_process, args=(str(run), str(tmp_path / "models"))) for run in runs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0, 0]
    registry = read_registry(tmp_path / "models")
    assert sorted(e["version"] for e in registry["history"]) == ["left", "right"]
    assert registry["current"] in ("left", "right") and registry["history"][-1]["version"] == registry["current"]
    assert registry["history"][1]["previous"] == registry["history"][0]["version"]  # the second saw the first


def test_focus_on_new_labels_repeats_them_beside_a_seeded_replay_sample():
    from model.data_format import Message
    from training.data import Corpus
    from training.retrain import focus_on_new_labels
    from training.training_args import RetrainSettings

    def corpus():
        old = [Message(f"旧{i}", (), f"old-{i}", label="normal") for i in range(10)]
        new = [Message(f"新{i}", (), f"new-{i}", label="extortion") for i in range(2)]
        real = [Message(f"评{i}", (), f"real-{i}", label="complaint") for i in range(5)]
        return Corpus(train=old + new, dev=[Message("dev", (), "dev-0", label="normal")], external_train={"reviews": real})

    narrowed = corpus()
    focus_on_new_labels(narrowed, {"new-0", "new-1", "dev-0"}, RetrainSettings(new_label_repeats=3, replay=6), seed=1)
    ids = [m.id for m in narrowed.train]
    assert len(ids) == 6 + 2 * 3 and ids.count("new-0") == ids.count("new-1") == 3
    assert narrowed.external_train == {} and [m.id for m in narrowed.dev] == ["dev-0"]  # dev untouched
    assert narrowed.focus == {"new_labels": 2, "repeats": 3, "replayed": 6}
    again = corpus()
    focus_on_new_labels(again, {"new-0", "new-1"}, RetrainSettings(new_label_repeats=3, replay=6), seed=1)
    assert [m.id for m in again.train] == ids  # seeded
    whole = corpus()
    focus_on_new_labels(whole, {"new-0", "new-1"}, RetrainSettings(new_label_repeats=1, replay=None), seed=1)
    assert len(whole.train) == 10 + 5 + 2


@pytest.mark.parametrize(("setting", "value"), [("start", "parent"), ("held_out_share", 1.0), ("new_label_repeats", 0), ("replay", -1)])
def test_retrain_settings_refuse_what_cannot_work(setting, value):
    from training.training_args import RetrainSettings

    with pytest.raises(ValueError, match=setting.replace("_", "-") if setting != "start" else "--from"):
        RetrainSettings(**{setting: value})
