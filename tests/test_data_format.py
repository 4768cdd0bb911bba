import json

import pytest

from model.data_format import InvalidDataError, message_from_json, read_messages
from serve.cli import main
from tests.conftest import write_jsonl

GOOD = {
    "id": "a-1",
    "text": "不给钱就差评",
    "context": [{"role": "seller", "text": "亲"}],
    "role": "buyer",
    "label": "extortion",
    "source": "written",
    "tags": ["domain:服装"],
}


def test_good_record_round_trips():
    message = message_from_json(GOOD, require_label=True)
    assert message.context[0].role == "seller"
    assert message.to_json()["context"] == GOOD["context"]
    assert message.tags == ("domain:服装",)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"id": "x"}', "missing field 'text'"),
        ('{"id": "x", "text": "   ", "label": "normal"}', "'text' is empty or whitespace only"),
        ('{"id": "x", "text": 5, "label": "normal"}', "'text' must be a string, got int"),
        ('{"id": "x", "text": "hi", "label": "spam"}', "'label' must be one of"),
        ('{"id": "x", "text": "hi"}', "missing field 'label'"),
        ('{"id": "x", "text": "hi", "label": "normal", "role": "admin"}', "'role' must be one of"),
        ('{"id": "x", "text": "hi", "label": "normal", "context": "earlier"}', "'context' must be a list"),
        ('{"id": "x", "text": "hi", "label": "normal", "context": [{"role": "buyer", "text": ""}]}', "context[0].text is empty"),
        ('{"id": "x", "text": "hi", "label": "normal", "tags": "a"}', "'tags' must be a list of strings"),
        ('{"text": "hi", "label": "normal"}', "missing field 'id'"),
    ],
)
def test_each_bad_line_is_reported_with_file_and_line(tmp_path, line, problem):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(GOOD, ensure_ascii=False) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InvalidDataError) as error:
        read_messages([path], require_label=True)
    assert error.value.problems == [f"{path}:3: " + error.value.problems[0].split(": ", 1)[1]]
    assert problem in error.value.problems[0]


def test_every_problem_is_listed_not_only_the_first(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [json.dumps(GOOD, ensure_ascii=False), "{", json.dumps(GOOD, ensure_ascii=False), '{"id": "b", "text": ""}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InvalidDataError) as error:
        read_messages([path], require_label=True)
    assert [p.split(": ")[0] for p in error.value.problems] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "duplicate id 'a-1' (first at" in error.value.problems[1]


def test_prediction_input_needs_only_text(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "在吗"}, {"text": "发货了吗", "context": []}])
    assert [m.text for m in read_messages([path])] == ["在吗", "发货了吗"]


def test_bom_is_accepted_and_invalid_utf8_is_reported(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes("\ufeff".encode() + json.dumps(GOOD).encode() + b"\n")
    assert len(read_messages([bom], require_label=True)) == 1
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"text": "\xff\xfe"}\n')
    with pytest.raises(InvalidDataError, match=rf"{broken}:2: not valid UTF-8"):
        read_messages([broken])


def test_folders_are_read_as_their_jsonl_files(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", [{**GOOD, "id": "b"}])
    write_jsonl(tmp_path / "a.jsonl", [{**GOOD, "id": "a"}])
    assert [m.id for m in read_messages([tmp_path], require_label=True)] == ["a", "b"]


def test_cli_validate_reports_and_exits_non_zero(tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(GOOD, ensure_ascii=False) + "\n" + '{"id": "z", "text": "x", "label": "bad"}\n', encoding="utf-8")
    assert main(["data", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2: 'label' must be one of" in err
    assert "1 problem(s) found" in err
    good = write_jsonl(tmp_path / "good.jsonl", [GOOD])
    assert main(["data", "validate", str(good)]) == 0
    assert "1 messages OK" in capsys.readouterr().out


def test_cli_validate_missing_file(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "nope.jsonl")]) == 1
    assert "nope.jsonl:0: cannot read" in capsys.readouterr().err
