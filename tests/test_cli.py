import io
import json

import pytest

from serve.cli import main, parse_turn
from tests.conftest import write_jsonl


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_one_message_with_context(tiny_model_dir, capsys):
    code, out, _ = run(
        ["predict", "钱呢", "--context", "buyer:给我转账", "--context", "卖家：不行", "--model", str(tiny_model_dir)], capsys
    )
    assert code == 0
    result = json.loads(out)
    assert result["label"] in result["probabilities"] and result["truncated"] is False


def test_predict_file_writes_one_line_per_input_with_ids(tiny_model_dir, tmp_path, capsys):
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": "a", "text": "在吗"}, {"id": "b", "text": "不给钱就差评", "context": [{"role": "seller", "text": "亲"}]}],
    )
    target = tmp_path / "out.jsonl"
    code, _, _ = run(["predict", "--input", str(source), "--output", str(target), "--model", str(tiny_model_dir)], capsys)
    assert code == 0
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["a", "b"]


def test_predict_writes_chunk_by_chunk_in_input_order_with_progress(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("serve.cli.PREDICT_CHUNK", 3)
    records = [{"id": f"m{i}", "text": "在吗" * (7 - i)} for i in range(7)]  # lengths falling: sorting must not reorder
    target = tmp_path / "out.jsonl"
    code, _, err = run(
        ["predict", "--input", str(write_jsonl(tmp_path / "in.jsonl", records)), "--output", str(target), "--model", str(tiny_model_dir)],
        capsys,
    )
    assert code == 0 and [json.loads(line)["id"] for line in target.read_text().splitlines()] == [r["id"] for r in records]
    assert "7/7" in err
    code, _, err = run(
        ["predict", "--input", str(tmp_path / "in.jsonl"), "--output", str(target), "--model", str(tiny_model_dir), "--quiet"], capsys
    )
    assert code == 0 and "7/7" not in err


def test_predict_reads_stdin(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"id": "s1", "text": "发货了吗"}\n'))
    code, out, _ = run(["predict", "--model", str(tiny_model_dir)], capsys)
    assert code == 0 and json.loads(out)["id"] == "s1"


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_message_exits_2(tiny_model_dir, capsys, text):
    code, out, err = run(["predict", text, "--model", str(tiny_model_dir)], capsys)
    assert code == 2 and out == "" and "empty" in err


def test_bad_lines_stop_before_any_work(tiny_model_dir, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "在吗"}\n{"text": ""}\n{"txt": "x"}\n', encoding="utf-8")
    target = tmp_path / "out.jsonl"
    code, _, err = run(["predict", "--input", str(source), "--output", str(target), "--model", str(tiny_model_dir)], capsys)
    assert code == 2 and not target.exists()
    assert f"{source}:2: 'text' is empty" in err and f"{source}:3: missing field 'text'" in err


def test_context_turn_syntax():
    assert parse_turn("买家：给钱").role == "buyer"
    assert parse_turn("seller: ok").text == " ok"
    with pytest.raises(Exception, match="ROLE:TEXT"):
        parse_turn("admin: hi")


def test_eval_writes_report(tiny_model_dir, tmp_path, capsys):
    records = [
        {"id": f"e{i}", "text": t, "label": label}
        for i, (t, label) in enumerate(
            [("不给钱就差评", "extortion"), ("在吗", "normal"), ("退款", "complaint"), ("不退款就投诉", "coercion")]
        )
    ]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    code, out, _ = run(
        ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--split", "all", "--out", str(tmp_path / "r")], capsys
    )
    assert code == 0 and "macro-F1" in out
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["n"] == 4


def test_data_stats_json(tmp_path, capsys):
    records = [
        {
            "id": "a#1",
            "text": "给我转五百不然差评",
            "label": "extortion",
            "source": "written",
            "tags": ["domain:服装"],
            "context": [{"role": "seller", "text": "亲"}],
        },
        {"id": "b", "text": "在吗", "label": "normal", "source": "written", "tags": ["domain:数码", "hard-negative"]},
        {"id": "c", "text": "想店铺平安就意思意思", "label": "extortion", "source": "generated", "tags": ["domain:数码", "keyword-free"]},
    ]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    code, out, _ = run(["data", "stats", str(data), "--challenge", "--frozen-test", str(tmp_path / "none.txt"), "--json"], capsys)
    stats = json.loads(out)
    assert code == 0 and stats["messages"] == 3
    assert stats["by_label"] == {"extortion": 2, "normal": 1}
    assert stats["by_source"] == {"written": 2, "generated": 1}
    assert stats["by_domain"] == {"数码": 2, "服装": 1} and stats["domains"] == 2
    assert stats["by_length"]["1-5"] == 1 and stats["with_context"] == 1
    assert stats["extortion_without_obvious_words"] == 1
    assert sum(sum(v.values()) for v in stats["by_split"].values()) == 3


def test_train_help_shows_each_settings_help_text(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Loss weight of a hard case" in out and "(default: 1.0)" in out
    assert "Keep only this many of the base's encoder layers" in out


LIGHT_COMMANDS = {
    "help": "import contextlib\nwith contextlib.suppress(SystemExit): main(['--help'])",
    "hash-password": "sys.stdin = io.StringIO('a long enough password\\n')\nassert main(['hash-password', '--stdin']) == 0",
    "data validate": "assert main(['data', 'validate', DATA]) == 0",
}


@pytest.mark.parametrize("command", LIGHT_COMMANDS)
def test_light_commands_do_not_import_torch(tmp_path, command):
    import subprocess
    import sys

    data = tmp_path / "one.jsonl"
    data.write_text('{"id": "a-1", "text": "在吗", "context": [], "label": "normal"}\n', encoding="utf-8")
    script = (
        f"import io, sys\nfrom serve.cli import main\nDATA = {str(data)!r}\n{LIGHT_COMMANDS[command]}\n"
        "heavy = sorted({'torch', 'transformers', 'gradio'} & set(sys.modules))\n"
        "assert not heavy, f'a light command loaded {heavy}'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
