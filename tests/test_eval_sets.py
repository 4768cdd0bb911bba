"""Independent evaluation sets and adversarial rounds: held out of every split, split and frozen as documented."""

from model.data_format import Message
from tests.conftest import write_jsonl
from training.adversarial import split_round
from training.data import load_corpus, read_eval_sets


def record(i, text, label="normal", prefix="c"):
    return {"id": f"{prefix}-{i:03d}", "text": text, "label": label, "source": "written", "context": []}


def test_eval_sets_are_named_by_file_or_folder_and_kept_out_of_every_split(tmp_path):
    corpus = [record(i, f"第{i}条消息内容不同{i * 7}号{chr(0x4E00 + i)}{chr(0x4F00 + i)}") for i in range(40)]
    corpus.append(record(99, "这个评价我写好了你看着办吧老板"))  # the same text as an evaluation message
    data = write_jsonl(tmp_path / "corpus.jsonl", corpus)
    eval_dir = tmp_path / "eval"
    (eval_dir / "blind").mkdir(parents=True)
    write_jsonl(eval_dir / "blind" / "writer-a.jsonl", [record(1, "这个评价我写好了你看着办吧老板", "extortion", "blind-a")])
    write_jsonl(eval_dir / "blind" / "writer-b.jsonl", [record(1, "发货了吗亲", "normal", "blind-b")])
    write_jsonl(eval_dir / "adversarial-r1.jsonl", [record(1, "退款到账了谢谢", "normal", "adv")])
    (eval_dir / "README.md").write_text("not a set")

    loaded = load_corpus([str(data)], None, (), None, None, [str(eval_dir)])

    assert {name: len(ms) for name, ms in loaded.eval_sets.items()} == {"adversarial-r1": 1, "blind": 2}
    assert [m.id for m in loaded.excluded] == ["c-099"]
    trained_or_tested = {m.id for m in loaded.train + loaded.dev + loaded.test}
    assert len(trained_or_tested) == 40 and not trained_or_tested & {"blind-a-001", "blind-b-001", "adv-001"}
    assert read_eval_sets([str(eval_dir / "missing")]) == {}


def test_tuning_sets_are_kept_out_of_every_split_and_apart_from_the_eval_sets(tmp_path):
    corpus = [record(i, f"第{i}条消息内容不同{i * 7}号{chr(0x4E00 + i)}{chr(0x4F00 + i)}") for i in range(30)]
    corpus.append(record(98, "五十块删评今晚转你看着办"))  # the same text as a tuning message
    data = write_jsonl(tmp_path / "corpus.jsonl", corpus)
    (tmp_path / "tuning").mkdir()
    write_jsonl(tmp_path / "tuning" / "writer-a.jsonl", [record(1, "五十块删评今晚转你看着办", "extortion", "tune-a")])
    write_jsonl(tmp_path / "tuning" / "writer-b.jsonl", [record(1, "几号发货", "normal", "tune-b")])

    loaded = load_corpus([str(data)], None, (), None, None, [], [str(tmp_path / "tuning")])

    assert sorted(m.id for m in loaded.tuning) == ["tune-a-001", "tune-b-001"] and loaded.eval_sets == {}
    assert [m.id for m in loaded.excluded] == ["c-098"]
    assert not {m.id for m in loaded.train + loaded.dev + loaded.test} & {"tune-a-001", "tune-b-001"}


def test_adversarial_round_keeps_every_error_as_many_correct_and_freezes_whole_conversations():
    messages, predicted = [], []
    for c in range(30):
        for turn in range(3):
            label = ("extortion", "complaint", "normal")[turn]
            messages.append(Message(f"对话{c}第{turn}句", id=f"adv-r1-x-c{c:02d}#{turn}", label=label, tags=("writer:x",)))
            predicted.append("normal" if c % 3 == 0 else label)  # conversations 0, 3, ... hold 2 errors each
    errors = sum(p != m.label for m, p in zip(messages, predicted, strict=True))

    result = split_round(messages, predicted, "r1", frozen_share=0.2)

    kept = result.frozen + result.train
    assert result.errors == errors == 20 and result.correct_kept == 20 and result.correct_dropped == 50
    assert len(kept) == 40 and len({m.id for m in kept}) == 40
    by_id = dict(zip((m.id for m in messages), predicted, strict=True))
    assert all(f"model:{by_id[m.id]}" in m.tags and "writer:x" in m.tags for m in kept)
    assert sum(f"model:{m.label}" not in m.tags for m in kept) == 20  # every error is kept
    frozen_conversations = {m.id.split("#")[0] for m in result.frozen}
    assert frozen_conversations and not frozen_conversations & {m.id.split("#")[0] for m in result.train}
    assert 0.05 < len(result.frozen) / len(kept) < 0.4
    assert split_round(messages, predicted, "r1").frozen == result.frozen  # stable


def test_adversarial_round_command_drops_what_the_second_reader_labels_otherwise(tmp_path, tiny_model_dir, capsys):
    import json

    from model.data_format import read_messages
    from serve.cli import main

    labels = ("extortion", "coercion", "complaint", "normal")
    written = [record(i, f"第{i}句话不给钱就差评" if i % 2 else f"第{i}句话快递到了吗", labels[i % 4], "adv-r9-x") for i in range(40)]
    write_jsonl(tmp_path / "x.jsonl", written)
    second = [{"id": r["id"], "label": r["label"] if i != 6 else "normal"} for i, r in enumerate(written)]
    write_jsonl(tmp_path / "second.jsonl", second)

    assert (
        main(
            [
                "data",
                "adversarial-round",
                str(tmp_path / "x.jsonl"),
                "--second-reader",
                str(tmp_path / "second.jsonl"),
                "--name",
                "r9",
                "--model",
                str(tiny_model_dir),
                "--eval-dir",
                str(tmp_path / "eval"),
                "--corpus-dir",
                str(tmp_path / "messages"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )

    frozen = read_messages([tmp_path / "eval" / "adversarial-r9.jsonl"], require_label=True)
    train = read_messages([tmp_path / "messages" / "adv-r9.jsonl"], require_label=True)
    kept = frozen + train
    assert "adv-r9-x-006" not in {m.id for m in kept}
    errors = sum(f"model:{m.label}" not in m.tags for m in kept)
    assert errors >= len(kept) - errors and "40 written, 39 verified by the second reader; against tiny-model" in capsys.readouterr().out
    write_jsonl(tmp_path / "short.jsonl", second[:5])
    assert (
        main(
            [
                "data",
                "adversarial-round",
                str(tmp_path / "x.jsonl"),
                "--second-reader",
                str(tmp_path / "short.jsonl"),
                "--name",
                "r9",
                "--model",
                str(tiny_model_dir),
                "--eval-dir",
                str(tmp_path / "eval"),
                "--corpus-dir",
                str(tmp_path / "messages"),
            ]
        )
        == 2
    )
    assert "did not label 35 messages" in capsys.readouterr().err
    assert json.loads((tmp_path / "x.jsonl").read_text(encoding="utf-8").splitlines()[0])["id"] == "adv-r9-x-000"
