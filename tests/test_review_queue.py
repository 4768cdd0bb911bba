"""The review queue: what to label first, and which batch folders the app may open (none outside batch_root)."""

from pathlib import Path

import numpy as np

from serve.app import review_folders
from training.review_queue import review_queue


def batch_output(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "conversations.parquet").write_bytes(b"PAR1")
    return folder


def test_only_folders_really_under_batch_root_are_offered(tmp_path):
    root = tmp_path / "runs"
    inside = batch_output(root / "nightly" / "2026-12-07")
    outside = batch_output(tmp_path / "elsewhere" / "secret-job")
    (root / "link-out").symlink_to(outside.parent, target_is_directory=True)  # a symlinked folder leading outside

    offered = review_folders(root)

    assert offered == [str(inside)]
    assert not any("secret-job" in folder for folder in offered)
    for typed in (str(root / ".." / "elsewhere" / "secret-job"), str(outside), "../elsewhere/secret-job"):
        assert typed not in offered  # the app refuses any folder not in this list
    assert review_folders(tmp_path / "missing") == []


def probabilities(rows):
    """Rows of (extortion, coercion, complaint, normal) in LABELS order."""
    from model.labels import LABELS

    order = [LABELS.index(label) for label in ("extortion", "coercion", "complaint", "normal")]
    probs = np.zeros((len(rows), 4))
    probs[:, order] = rows
    return probs


def test_the_queue_puts_disagreements_then_uncertain_messages_first_with_a_random_share():
    texts = ["不给五百块就差评", "发货了吗", "质量一般般吧", "尺码偏大能换吗", "包装有点破", "谢谢老板"]
    probs = probabilities(
        [
            [0.05, 0.05, 0.10, 0.80],  # keywords say extortion (threat + money), the model says normal: disagreement
            [0.01, 0.01, 0.01, 0.97],  # sure and agreeing: last
            [0.02, 0.02, 0.48, 0.48],  # a tie between complaint and normal: uncertain
            [0.01, 0.30, 0.39, 0.30],
            [0.01, 0.01, 0.90, 0.08],
            [0.01, 0.01, 0.02, 0.96],
        ]
    )
    queue = review_queue(texts, probs, size=4, random_share=0.0)
    assert [(e.row, e.reason) for e in queue] == [(0, "keywords disagree"), (2, "uncertain"), (3, "uncertain"), (4, "uncertain")]
    mixed = review_queue(texts, probs, size=6, random_share=0.5, seed=3)
    assert sum(e.reason == "random" for e in mixed) == 3 and sorted(e.row for e in mixed) == list(range(6))
    assert mixed == review_queue(texts, probs, size=6, random_share=0.5, seed=3)  # seeded


def test_near_duplicates_are_not_queued_twice():
    texts = ["这个差评你看着办吧老板五百块", "这个差评你看着办吧老板五百块！", "这个差评你看着办吧老板，五百块", "请问几号发货"]
    probs = probabilities([[0.4, 0.1, 0.4, 0.1]] * 3 + [[0.3, 0.3, 0.2, 0.2]])
    queue = review_queue(texts, probs, size=4, random_share=0.0)
    assert sorted(e.row for e in queue) == [0, 3]  # one of the three near copies


def test_the_queue_command_writes_messages_with_context_reason_and_model_view(tiny_model_dir, tmp_path, capsys):
    import json

    from model.classifier import ExtortionClassifier
    from serve.cli import main
    from tests.conftest import write_jsonl
    from tests.test_batch import chat_rows

    log = write_jsonl(tmp_path / "log.jsonl", chat_rows(40))
    assert (
        main(["batch", str(log), "--output", str(tmp_path / "out"), "--model", str(tiny_model_dir), "--precision", "fp32", "--quiet"]) == 0
    )
    assert main(["queue", str(tmp_path / "out"), "--size", "10", "--out", str(tmp_path / "queue.jsonl")]) == 0

    queued = [json.loads(line) for line in (tmp_path / "queue.jsonl").read_text(encoding="utf-8").splitlines()]
    # the log repeats a few texts with numbers added: near copies are queued once, so fewer than 10 remain
    assert 5 <= len(queued) <= 10 and len({q["text"].rsplit(" ", 1)[0] for q in queued}) == len(queued)
    assert {q["queue_reason"] for q in queued} <= {"uncertain", "keywords disagree", "random"} and "random" in {
        q["queue_reason"] for q in queued
    }
    later = next(q for q in queued if int(q["id"][1:]) >= 7)  # every conversation has 7 rows between its turns
    assert later["context"] and all(turn["role"] in ("buyer", "seller") for turn in later["context"])
    assert {q["model_version"] for q in queued} == {ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu").version}
    assert f"{len(queued)} messages queued" in capsys.readouterr().err
    assert main(["queue", str(tmp_path / "missing")]) == 2


def test_a_decision_from_the_queue_records_why_it_was_offered():
    from model.data_format import Message
    from serve.inbox import decision_record

    record = decision_record(Message("在吗", id="m1"), "normal", "alice", "v1", "normal", {"normal": 1.0}, queue_reason="uncertain")
    assert record["queue_reason"] == "uncertain"
    assert "queue_reason" not in decision_record(Message("在吗", id="m1"), "normal", "alice", "v1", "normal", {"normal": 1.0})
