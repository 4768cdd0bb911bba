"""Both batch engines give each message the same preceding turns: the last ``context_turns`` of its conversation."""

import json
from datetime import datetime, timedelta

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from model.data_format import Turn
from serve.batch.engine import ContextTracker
from serve.batch.ray_engine import ROWS_SCHEMA, add_context
from serve.batch.reader import ChatRow

START = datetime(2026, 1, 1)


def interleaved_conversations(lengths: list[int]) -> list[ChatRow]:
    """Conversations of the given lengths, their turns interleaved in time as in a real log."""
    rows = []
    for conversation, length in enumerate(lengths):
        for turn in range(length):
            rows.append(
                ChatRow(
                    file="log.jsonl",
                    row=0,
                    text=f"c{conversation}t{turn}",
                    message_id=f"c{conversation}-{turn:02d}",
                    conversation_id=f"c{conversation}",
                    sender_role=("buyer", "seller")[turn % 2],
                    time=START + timedelta(minutes=turn, seconds=conversation),
                )
            )
    return sorted(rows, key=lambda row: row.time)


def expected_context(rows: list[ChatRow], turns: int) -> dict[str, list[str]]:
    earlier: dict[str, list[str]] = {}
    expected = {}
    for row in rows:
        history = earlier.setdefault(row.conversation_id, [])
        expected[row.message_id] = history[len(history) - min(turns, len(history)) :]
        history.append(row.text)
    return expected


def local_context(rows: list[ChatRow], turns: int) -> dict[str, list[str]]:
    tracker = ContextTracker(turns, max_conversations=100)
    contexts = {}
    for row in rows:
        contexts[row.message_id] = [t.text for t in tracker.context_for(row)]
        tracker.add(row)
    return contexts


def ray_context(rows: list[ChatRow], turns: int) -> dict[str, list[str]]:
    contexts = {}
    for conversation in {row.conversation_id for row in rows}:
        records = [
            {
                "file": row.file,
                "message_id": row.message_id,
                "conversation_id": row.conversation_id,
                "sender_role": row.sender_role,
                "time": row.time,
                "text": row.text,
                "group": conversation,
            }
            for row in rows
            if row.conversation_id == conversation
        ]
        for record in add_context(pa.Table.from_pylist(records, schema=ROWS_SCHEMA), turns).to_pylist():
            contexts[record["message_id"]] = [text for _, text in json.loads(record["context"])]
    return contexts


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=4), turns=st.integers(0, 6))
def test_each_engine_gives_the_last_turns_of_the_conversation(lengths, turns):
    rows = interleaved_conversations(lengths)
    expected = expected_context(rows, turns)
    assert local_context(rows, turns) == expected
    assert ray_context(rows, turns) == expected


def test_a_row_bringing_fewer_turns_than_the_window_keeps_them_all():
    given_turns = (Turn("buyer", "一"), Turn("seller", "二"), Turn("buyer", "三"))
    row = ChatRow(file="log.jsonl", row=1, text="四", context=given_turns)
    assert ContextTracker(turns=4, max_conversations=10).context_for(row) == given_turns
    assert ContextTracker(turns=2, max_conversations=10).context_for(row) == given_turns[1:]
