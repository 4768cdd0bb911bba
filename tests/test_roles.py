"""One role table (model.labels.ROLE_ALIASES), honoured the same way by every way in: CLI, app, API, batch reader."""

import gradio as gr
import pytest
from pydantic import ValidationError

from model.labels import ROLE_ALIASES
from serve.app import parse_context
from serve.batch.reader import ErrorRow, to_chat_row
from serve.cli import UsageError, parse_turn
from serve.schemas import MessageIn

SPELLINGS = [*ROLE_ALIASES.items(), (" Seller ", "seller"), ("BUYER", "buyer")]


@pytest.mark.parametrize(("alias", "role"), SPELLINGS)
def test_every_alias_means_the_same_role_everywhere(alias, role):
    assert parse_turn(f"{alias}:你好").role == role
    assert parse_turn(f"{alias}：你好").role == role
    assert parse_context([[alias, "你好"]])[0].role == role
    body = MessageIn.model_validate({"text": "你好", "role": alias, "context": [{"role": alias, "text": "在吗"}]})
    assert body.role == role and body.context[0].role == role
    row = to_chat_row({"message_id": "m1", "conversation_id": "c1", "text": "你好", "sender_role": alias}, "log.jsonl", 1, {})
    assert not isinstance(row, ErrorRow) and row.sender_role == role


@pytest.mark.parametrize("unknown", ["admin", "卖家们", "bot"])
def test_an_unknown_role_is_refused_everywhere_naming_it(unknown):
    with pytest.raises(UsageError, match="expected ROLE:TEXT"):
        parse_turn(f"{unknown}:你好")
    with pytest.raises(gr.Error):
        parse_context([[unknown, "你好"]])
    with pytest.raises(ValidationError):
        MessageIn.model_validate({"text": "你好", "role": unknown})
    row = to_chat_row({"message_id": "m1", "conversation_id": "c1", "text": "你好", "sender_role": unknown}, "log.jsonl", 1, {})
    assert isinstance(row, ErrorRow) and unknown in row.reason
