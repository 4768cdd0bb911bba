import json
import multiprocessing

import pytest

from model.data_format import Message, Turn, read_messages
from serve.inbox import append_decision, decision_record


def _write_many(inbox, writer: int, count: int) -> None:
    for i in range(count):
        message = Message(f"写手{writer}的第{i}条" + "长" * (i * 37 % 3000), (Turn("buyer", "之前的话"),), id=f"w{writer}-{i}")
        append_decision(decision_record(message, "extortion", f"mod{writer}", "v1", "normal", {"extortion": 0.1}), inbox)


def test_concurrent_writers_never_tear_or_interleave_lines(tmp_path):
    processes = [multiprocessing.get_context("spawn").Process(target=_write_many, args=(tmp_path, w, 60)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    lines = [line for path in tmp_path.glob("*.jsonl") for line in path.read_text(encoding="utf-8").splitlines()]
    records = [json.loads(line) for line in lines]  # a torn line would not parse
    assert sorted(r["id"] for r in records) == sorted(f"w{w}-{i}" for w in range(4) for i in range(60))
    assert len(list(read_messages([str(tmp_path)], require_label=True))) == 240  # the annotation format


def test_decision_records_who_when_and_what_the_model_said():
    record = decision_record(Message("钱呢？"), "extortion", "alice", "eg-small-v4", "normal", {"normal": 0.9})
    assert record["source"] == "moderator" and record["moderator"] == "alice" and record["model_label"] == "normal"
    assert record["agrees_with_model"] is False and record["id"].startswith("inbox-") and record["decided_at"]
    with pytest.raises(ValueError, match="label"):
        decision_record(Message("钱呢？"), "spam", "alice", "v", "normal", {})
    with pytest.raises(ValueError, match="moderator"):
        decision_record(Message("钱呢？"), "normal", " ", "v", "normal", {})
