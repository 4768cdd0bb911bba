"""Odd and bad input through the real `extortion-guard batch`: each kind ends as predictions or error rows, as the table says.

Every case writes one input file of a few rows; the command must finish with rows in = predictions + errors, the
documented exit code (0 all scored, 3 some error rows), and the expected outcome of the case's odd row.
"""

import csv
import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serve.cli import main

GOOD = {"message_id": "good", "conversation_id": "c", "sender_role": "buyer", "ts": "2026-11-27T10:00:00Z", "text": "亲，什么时候发货"}


def jsonl(*rows) -> bytes:
    return b"".join((row if isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode()) + b"\n" for row in rows)


def odd(**fields) -> dict:
    return {"message_id": "odd", "conversation_id": "c", "text": "在吗"} | fields


def csv_bytes(header: list[str], *rows: list) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def nested(depth: int) -> bytes:
    return b'{"message_id": "odd", "text": "hi", "extra": ' + b"[" * depth + b"]" * depth + b"}"


# (name, file name, content, expected): "scored"; "no rows"; a reason for the odd row only (the good row is scored);
# "all: reason" when every row fails (a column missing or of the wrong type); "file: reason" when the file cannot be read.
CASES = [
    # encodings and line endings
    ("invalid UTF-8", "a.jsonl", jsonl(GOOD, b'{"message_id": "odd", "text": "\xff\xfe"}'), "not valid UTF-8"),
    ("escaped lone surrogate", "a.jsonl", jsonl(GOOD, b'{"message_id": "odd", "text": "\\ud800"}'), "not valid UTF-8"),
    ("byte order mark", "a.jsonl", b"\xef\xbb\xbf" + jsonl(odd(), GOOD), "scored"),
    ("CRLF line endings", "a.jsonl", jsonl(GOOD, odd()).replace(b"\n", b"\r\n"), "scored"),
    ("blank lines between rows", "a.jsonl", jsonl(GOOD) + b"\n\n  \n" + jsonl(odd()), "scored"),
    ("no newline at the end", "a.jsonl", jsonl(GOOD, odd())[:-1], "scored"),
    ("escaped NUL in the text", "a.jsonl", jsonl(GOOD, odd(text="在吗\u0000在吗")), "scored"),
    ("raw NUL byte in the line", "a.jsonl", jsonl(GOOD, b'{"message_id": "odd", "text": "a\x00b"}'), "not valid JSON"),
    # JSON that is not a chat row
    ("broken JSON", "a.jsonl", jsonl(GOOD, b'{"message_id": "odd", "text": '), "not valid JSON"),
    ("a JSON array", "a.jsonl", jsonl(GOOD, [1, 2]), "expected a JSON object"),
    ("a JSON string", "a.jsonl", jsonl(GOOD, "在吗"), "expected a JSON object"),
    ("deeply nested JSON", "a.jsonl", jsonl(GOOD, nested(100_000)), "nested too deeply"),
    ("text missing", "a.jsonl", jsonl(GOOD, {"message_id": "odd"}), "no 'text' field"),
    ("text null", "a.jsonl", jsonl(GOOD, odd(text=None)), "no 'text' field"),
    ("text a number", "a.jsonl", jsonl(GOOD, odd(text=5)), "not a string"),
    ("text an object", "a.jsonl", jsonl(GOOD, odd(text={"a": 1})), "not a string"),
    ("text empty", "a.jsonl", jsonl(GOOD, odd(text="")), "empty"),
    ("text whitespace only", "a.jsonl", jsonl(GOOD, odd(text=" \t\u3000 ")), "empty"),
    ("text zero-width characters only", "a.jsonl", jsonl(GOOD, odd(text="\u200b\u200c\u200d\ufeff")), "empty"),
    ("text with right-to-left overrides", "a.jsonl", jsonl(GOOD, odd(text="\u202e评差给就钱给不\u202c")), "scored"),
    ("text of 100,000 characters", "a.jsonl", jsonl(GOOD, odd(text="不给钱就差评" * 16_667)), "scored"),
    ("a 10 MB line", "a.jsonl", jsonl(GOOD, odd(text="在" * 3_500_000)), "scored"),
    ("unknown sender role", "a.jsonl", jsonl(GOOD, odd(sender_role="robot")), "not buyer or seller"),
    ("sender role alias 客服", "a.jsonl", jsonl(GOOD, odd(sender_role="客服")), "scored"),
    ("context not a list", "a.jsonl", jsonl(GOOD, odd(context={"role": "buyer"})), "context"),
    ("context turn with a bad role", "a.jsonl", jsonl(GOOD, odd(context=[{"role": "boss", "text": "x"}])), "role"),
    ("duplicate message ids", "a.jsonl", jsonl(GOOD, odd(message_id="good")), "scored"),
    ("numeric ids", "a.jsonl", jsonl(GOOD, odd(message_id=17, conversation_id=3)), "scored"),
    ("extra unknown fields", "a.jsonl", jsonl(GOOD, odd(note="x", score=[1, 2])), "scored"),
    # timestamps: readable ones order the conversation; unreadable ones are kept as given, with no time
    ("ts ISO with Z", "a.jsonl", jsonl(GOOD, odd(ts="2026-11-27T10:00:01Z")), "scored"),
    ("ts ISO with offset", "a.jsonl", jsonl(GOOD, odd(ts="2026-11-27T18:00:01+08:00")), "scored"),
    ("ts ISO with a space", "a.jsonl", jsonl(GOOD, odd(ts="2026-11-27 10:00:01")), "scored"),
    ("ts epoch seconds", "a.jsonl", jsonl(GOOD, odd(ts=1_764_237_601)), "scored"),
    ("ts epoch milliseconds", "a.jsonl", jsonl(GOOD, odd(ts=1_764_237_601_000)), "scored"),
    ("ts epoch as a string", "a.jsonl", jsonl(GOOD, odd(ts="1764237601")), "scored"),
    ("ts unreadable words", "a.jsonl", jsonl(GOOD, odd(ts="yesterday")), "scored"),
    ("ts impossible date", "a.jsonl", jsonl(GOOD, odd(ts="2026-13-45T99:00:00")), "scored"),
    ("ts NaN and infinity", "a.jsonl", jsonl(GOOD, odd(ts="nan"), odd(message_id="odd2", ts=1e308)), "scored"),
    # gzip
    ("gzip", "a.jsonl.gz", gzip.compress(jsonl(GOOD, odd())), "scored"),
    (
        "truncated gzip",
        "a.jsonl.gz",
        gzip.compress(jsonl(GOOD, *[odd(message_id=f"r{i}") for i in range(300)]))[:-40],
        "cannot be read past row",
    ),
    ("not gzip at all", "a.jsonl.gz", jsonl(GOOD, odd()), "file: cannot be read past row 0"),
    # CSV
    ("CSV", "a.csv", csv_bytes(["message_id", "text"], ["good", "在吗"], ["odd", "好的"]), "scored"),
    ("CSV with a BOM", "a.csv", b"\xef\xbb\xbf" + csv_bytes(["message_id", "text"], ["odd", "在吗"], ["good", "好的"]), "scored"),
    ("CSV with quoted commas and newlines", "a.csv", csv_bytes(["message_id", "text"], ["good", "在吗"], ["odd", "好的,\n收到"]), "scored"),
    ("CSV row with too many fields", "a.csv", b"message_id,text\ngood,hi\nodd,a,b\n", "fields"),
    ("CSV row with too few fields", "a.csv", b"message_id,text,sender_role\ngood,hi,buyer\nodd\n", "fewer fields"),
    ("CSV with an unterminated quote", "a.csv", b'message_id,text\ngood,hi\nodd,"never closed\nmore,rows\n', "broken CSV quoting"),
    ("CSV without a text column", "a.csv", b"message_id,body\ngood,hi\nodd,x\n", "all: no 'text' field"),
    # Parquet
    ("Parquet", "a.parquet", parquet_bytes(pa.table({"message_id": ["good", "odd"], "text": ["在吗", "好的"]})), "scored"),
    (
        "Parquet with a numeric text column",
        "a.parquet",
        parquet_bytes(pa.table({"message_id": ["good", "odd"], "text": [1, 2]})),
        "all: not a string",
    ),
    (
        "Parquet without a text column",
        "a.parquet",
        parquet_bytes(pa.table({"message_id": ["good", "odd"], "body": ["x", "y"]})),
        "all: no 'text' field",
    ),
    (
        "Parquet with null text",
        "a.parquet",
        parquet_bytes(pa.table({"message_id": ["good", "odd"], "text": ["在吗", None]})),
        "no 'text' field",
    ),
    ("broken Parquet", "a.parquet", b"PAR1 this is not parquet PAR1", "file: cannot be read past row 0"),
    # empty
    ("empty JSON Lines file", "a.jsonl", b"", "no rows"),
    ("empty CSV (header only)", "a.csv", b"message_id,text\n", "no rows"),
]


@pytest.mark.parametrize("name, file_name, content, expected", CASES, ids=[case[0] for case in CASES])
def test_every_kind_of_input_ends_as_predictions_or_error_rows(tiny_model_dir, tmp_path, name, file_name, content, expected):
    path = tmp_path / file_name
    path.write_bytes(content)
    out = tmp_path / "out"
    code = main(["batch", str(path), "--output", str(out), "--model", str(tiny_model_dir), "--precision", "fp32", "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    predictions = pq.read_table(out / "predictions.parquet")
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    assert summary["rows_in"] == predictions.num_rows + len(errors)
    assert code == (3 if errors else 0)
    if expected == "no rows":
        assert summary["rows_in"] == 0
    elif expected == "scored":
        assert not errors and predictions.num_rows >= 2
    elif expected.startswith("all: "):
        assert predictions.num_rows == 0 and len(errors) == 2 and all(expected[5:] in e["reason"] for e in errors), errors
    elif expected.startswith("file: "):
        assert predictions.num_rows == 0 and len(errors) == 1 and expected[6:] in errors[0]["reason"], errors
    else:
        assert len(errors) == 1 and expected in errors[0]["reason"], errors
        assert predictions.num_rows >= 1  # the good row is still scored


def test_bad_paths_stop_before_any_work_with_exit_2(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "gone.jsonl")
    (tmp_path / "file").write_text("x")
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(GOOD))
    for inputs, output in (
        ([tmp_path / "missing.jsonl"], tmp_path / "o1"),
        ([tmp_path / "empty"], tmp_path / "o2"),
        ([tmp_path / "notes.txt"], tmp_path / "o3"),
        ([tmp_path / "dangling.jsonl"], tmp_path / "o4"),
        ([good], tmp_path / "file" / "out"),
    ):
        code = main(["batch", *map(str, inputs), "--output", str(output), "--model", str(tiny_model_dir), "--quiet"])
        assert code == 2, (inputs, output, capsys.readouterr().err)
        assert capsys.readouterr().err.strip()  # a reason is printed
