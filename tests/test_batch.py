import csv
import gzip
import json
import multiprocessing
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from model.classifier import ExtortionClassifier
from model.data_format import Message, Turn
from model.labels import LABELS
from serve.batch import BatchConfig, run_local
from serve.batch.engine import JobMismatch, rows_with_context
from serve.batch.outputs import PREDICTION_SCHEMA
from serve.batch.reader import ErrorRow, input_files, parse_columns, read_file
from serve.batch.rollups import Rollups

TEXTS = ["在吗", "东西坏了", "不给钱就差评", "给我退款", "好的亲", "发货了吗", "再不处理就投诉", "转200删评"]


def chat_rows(n: int, conversations: int = 7, shops: int = 3) -> list[dict]:
    """Interleaved conversations in time order, buyers and sellers alternating."""
    return [
        {
            "message_id": f"m{i}",
            "conversation_id": f"c{i % conversations}",
            "sender_id": f"u{i % conversations}" if (i // conversations) % 2 == 0 else f"s{i % shops}",
            "sender_role": "buyer" if (i // conversations) % 2 == 0 else "seller",
            "shop_id": f"shop{i % shops}",
            "ts": 1_764_000_000 + 3600 * i,
            "text": f"{TEXTS[i % len(TEXTS)]} {i}",
        }
        for i in range(n)
    ]


def write_jsonl(path, records, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)) + "\n")
    return path


def run(folder, inputs, tiny_model_dir, **overrides):
    """Run the local engine into ``folder/out``; return the summary and the output folder."""
    settings = {"model": tiny_model_dir, "chunk_rows": 16, "quiet": True, "precision": "fp32"} | overrides
    config = BatchConfig([str(p) for p in inputs], str(folder / "out"), **settings)
    return run_local(config), folder / "out"


def test_every_row_ends_as_a_prediction_or_an_error(tiny_model_dir, tmp_path):
    records = chat_rows(40)
    lines = [
        *records[:10],
        "{not json",
        {"message_id": "e1", "text": ""},
        [1, 2],
        {"message_id": "e2", "text": 5},
        {"message_id": "e3", "sender_role": "robot", "text": "hi"},
        *records[10:],
    ]
    summary, out = run(tmp_path, [write_jsonl(tmp_path / "log.jsonl", lines)], tiny_model_dir)
    predictions = pq.read_table(out / "predictions.parquet")
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert summary["rows_in"] == 45 == predictions.num_rows + len(errors)
    assert predictions.column("message_id").to_pylist() == [r["message_id"] for r in records]  # input order kept
    assert [e["row"] for e in errors] == [11, 12, 13, 14, 15]
    assert "not valid JSON" in errors[0]["reason"] and "empty" in errors[1]["reason"] and "robot" in errors[4]["reason"]
    assert set(predictions.column("label").to_pylist()) <= {"extortion", "coercion", "complaint", "normal"}
    assert not list(out.glob(".*.tmp")) and not (out / "_parts").exists()


def test_predictions_equal_the_classifier_with_conversation_context(tiny_model_dir, tmp_path):
    records = chat_rows(30)
    _, out = run(tmp_path, [write_jsonl(tmp_path / "log.jsonl", records)], tiny_model_dir, context_turns=2)
    table = pq.read_table(out / "predictions.parquet")
    history: dict[str, list[Turn]] = {}
    expected = []
    for r in records:
        turns = history.setdefault(r["conversation_id"], [])
        expected.append(Message(r["text"], tuple(turns[-2:])))
        turns.append(Turn(r["sender_role"], r["text"]))
    probs = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu").predict_proba(expected)
    assert table.column("p_extortion").to_numpy() == pytest.approx(probs[:, 0], abs=1e-5)


def test_context_follows_input_order_of_each_conversation(tmp_path):
    records = chat_rows(6, conversations=2)
    write_jsonl(tmp_path / "log.jsonl", records)
    config = BatchConfig([str(tmp_path / "log.jsonl")], "unused", context_turns=2)
    contexts = {row.message_id: [t.text for t in ctx] for row, ctx in rows_with_context([tmp_path / "log.jsonl"], config)}
    assert contexts["m0"] == [] and contexts["m2"] == ["在吗 0"]
    assert contexts["m4"] == ["在吗 0", "不给钱就差评 2"]  # conversation c0 only: m0, m2 (m1, m3 are c1)


def test_csv_gzip_and_parquet_with_renamed_columns_give_the_same_predictions(tiny_model_dir, tmp_path):
    records = [{**r, "content": r.pop("text")} for r in chat_rows(20)]
    (tmp_path / "a").mkdir()
    write_jsonl(tmp_path / "a" / "log.jsonl.gz", records, gz=True)
    with open(tmp_path / "log.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "log.parquet")
    results = []
    for name, path in (("gz", tmp_path / "a"), ("csv", tmp_path / "log.csv"), ("parquet", tmp_path / "log.parquet")):
        _, out = run(tmp_path / name, [path], tiny_model_dir, columns=parse_columns("text=content"))
        results.append(pq.read_table(out / "predictions.parquet").column("p_extortion").to_pylist())
    assert results[0] == pytest.approx(results[1], abs=1e-6) and results[0] == pytest.approx(results[2], abs=1e-6)


def test_annotation_format_uses_its_own_context(tiny_model_dir, tmp_path):
    record = {"id": "a1", "text": "钱呢？", "context": [{"role": "buyer", "text": "给200就删差评"}]}
    _, out = run(tmp_path, [write_jsonl(tmp_path / "a.jsonl", [record])], tiny_model_dir)
    expected = ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu").predict_proba(record)
    assert pq.read_table(out / "predictions.parquet").column("p_extortion")[0].as_py() == pytest.approx(expected[0], abs=1e-5)


def test_rollups_count_shops_per_sender_and_pick_the_trigger(tiny_model_dir, tmp_path):
    records = chat_rows(42)
    summary, out = run(tmp_path, [write_jsonl(tmp_path / "log.jsonl", records)], tiny_model_dir)
    predictions = pq.read_table(out / "predictions.parquet").to_pylist()
    conversations = {r["conversation_id"]: r for r in pq.read_table(out / "conversations.parquet").to_pylist()}
    for cid, conversation in conversations.items():
        rows = [p for p in predictions if p["conversation_id"] == cid]
        best = max(rows, key=lambda p: p["p_extortion"])
        assert conversation["trigger_message_id"] == best["message_id"] and conversation["messages"] == len(rows)
    senders = {r["sender_id"]: r for r in pq.read_table(out / "senders.parquet").to_pylist()}
    for sid, sender in senders.items():
        threat_shops = {p["shop_id"] for p in predictions if p["sender_id"] == sid and p["label"] in ("extortion", "coercion")}
        assert sender["shops_with_threats"] == len(threat_shops)
    assert summary["conversations"] == 7 and (out / "shops.parquet").exists()
    page = (out / "report.html").read_text()
    assert "data:image/png;base64" in page and "Top 100 conversations" in page and "<script" not in page


def _random_predictions(n: int, seed: int = 0) -> pa.Table:
    import random

    rng = random.Random(seed)

    def maybe(value):  # some rows lack each key
        return None if rng.random() < 0.1 else value

    rows = []
    for i in range(n):
        probs = [rng.choice([0.1, 0.5, 0.9]) for _ in range(4)]  # few values, so ties in p_extortion are common
        rows.append(
            {
                "file": f"f{i % 2}",
                "row": i // 2,
                "message_id": f"m{i}",
                "conversation_id": maybe(f"c{rng.randrange(20)}"),
                "sender_id": maybe(f"u{rng.randrange(15)}"),
                "shop_id": maybe(f"s{rng.randrange(6)}"),
                "time": maybe(1_764_000_000_000_000 + rng.randrange(5) * 86_400_000_000),
                "label": rng.choice(LABELS),
                **{f"p_{label}": p for label, p in zip(LABELS, probs, strict=True)},
            }
        )
    return pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)


def test_rollups_built_batch_by_batch_equal_rollups_in_one_go(tmp_path):
    path = tmp_path / "predictions.parquet"
    pq.write_table(_random_predictions(400), path)
    whole, batched = Rollups.of_file(path), Rollups.of_file(path, batch_rows=7)
    for name, table in whole.tables().items():
        assert batched.tables()[name].equals(table), name
    assert batched.labels_per_day().equals(whole.labels_per_day())
    assert all((batched.histograms[k] == whole.histograms[k]).all() for k in whole.histograms)
    assert batched.label_counts == whole.label_counts and sum(whole.label_counts.values()) == 400


def test_rollups_of_no_predictions_are_empty_tables(tmp_path):
    path = tmp_path / "predictions.parquet"
    pq.write_table(PREDICTION_SCHEMA.empty_table(), path)
    assert {name: table.num_rows for name, table in Rollups.of_file(path).tables().items()} == {
        "conversations": 0,
        "senders": 0,
        "shops": 0,
    }


def _crash_after_two_parts(config):
    # Simulates kill -9: the process dies after writing two parts, with no chance to clean up.
    import os

    import serve.batch.engine as engine

    original, written = engine.write_part, []

    def write_then_maybe_die(*args):
        original(*args)
        written.append(1)
        if len(written) == 2:
            os._exit(9)

    engine.write_part = write_then_maybe_die
    run_local(config)


def test_resume_after_kill_gives_the_same_outputs(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "log.jsonl", chat_rows(80))
    reference, reference_out = run(tmp_path / "reference", [path], tiny_model_dir)
    config = BatchConfig([str(path)], str(tmp_path / "out"), model=tiny_model_dir, chunk_rows=16, quiet=True, precision="fp32")
    process = multiprocessing.get_context("spawn").Process(target=_crash_after_two_parts, args=(config,))
    process.start()
    process.join()
    assert process.exitcode == 9
    assert len(list((tmp_path / "out" / "_parts").glob("part-*.parquet"))) == 2
    assert not (tmp_path / "out" / "predictions.parquet").exists()
    summary = run_local(config)
    assert pq.read_table(tmp_path / "out" / "predictions.parquet").equals(pq.read_table(reference_out / "predictions.parquet"))
    assert summary["predictions"] == reference["predictions"] == 80


def test_a_different_job_in_the_same_folder_needs_restart(tiny_model_dir, tmp_path):
    first = write_jsonl(tmp_path / "one.jsonl", chat_rows(20))
    second = write_jsonl(tmp_path / "two.jsonl", chat_rows(10))
    parts = tmp_path / "out" / "_parts"
    parts.mkdir(parents=True)
    (parts / "job.json").write_text('{"settings": "another job"}')
    with pytest.raises(JobMismatch, match="--restart"):
        run(tmp_path, [first], tiny_model_dir)
    summary, _ = run(tmp_path, [second], tiny_model_dir, restart=True)
    assert summary["predictions"] == 10


def test_two_workers_give_the_same_predictions(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "log.jsonl", chat_rows(50))
    _, one = run(tmp_path / "one", [path], tiny_model_dir)
    _, two = run(tmp_path / "two", [path], tiny_model_dir, workers=2)
    columns = ["message_id", "label", "p_extortion"]
    assert pq.read_table(one / "predictions.parquet", columns=columns).equals(pq.read_table(two / "predictions.parquet", columns=columns))


def test_int8_agrees_with_fp32_on_most_labels(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "log.jsonl", chat_rows(40))
    _, fp32 = run(tmp_path / "a", [path], tiny_model_dir)
    summary, int8 = run(tmp_path / "b", [path], tiny_model_dir, precision="int8")
    assert summary["precision"] == "int8"
    a = pq.read_table(fp32 / "predictions.parquet").column("p_extortion").to_numpy()
    b = pq.read_table(int8 / "predictions.parquet").column("p_extortion").to_numpy()
    assert abs(a - b).max() < 0.05 and (a != b).any()


def test_bad_paths_and_columns_are_named(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        input_files([str(tmp_path / "missing.jsonl")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown format"):
        input_files([str(tmp_path / "notes.txt")])
    with pytest.raises(ValueError, match="FIELD=COLUMN"):
        parse_columns("body")


def test_csv_rows_with_wrong_field_counts_become_errors(tmp_path):
    (tmp_path / "log.csv").write_text("message_id,text\nm1,你好\nm2,a,b\nm3\n", encoding="utf-8")
    rows = list(read_file(tmp_path / "log.csv"))
    assert [type(r).__name__ for r in rows] == ["ChatRow", "ErrorRow", "ErrorRow"]
    assert isinstance(rows[1], ErrorRow) and rows[1].row == 2 and "3 fields" in rows[1].reason


def test_cli_exit_codes_tell_errors_from_failure(tiny_model_dir, tmp_path, capsys):
    from serve.cli import main

    clean = write_jsonl(tmp_path / "clean.jsonl", chat_rows(5))
    dirty = write_jsonl(tmp_path / "dirty.jsonl", [*chat_rows(5), {"text": ""}])
    common = ["--model", str(tiny_model_dir), "--precision", "fp32", "--quiet"]
    assert main(["batch", str(clean), "--output", str(tmp_path / "a"), *common]) == 0
    assert main(["batch", str(dirty), "--output", str(tmp_path / "b"), *common]) == 3
    assert main(["batch", str(tmp_path / "missing"), "--output", str(tmp_path / "c"), *common]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad_flag:  # argparse refuses the flag, naming it and the problem
        main(["batch", str(clean), "--output", str(tmp_path / "d"), "--columns", "body", *common])
    assert bad_flag.value.code == 2 and "argument --columns: 'body' should be FIELD=COLUMN" in capsys.readouterr().err


def test_undecodable_bytes_are_error_rows_not_text(tiny_model_dir, tmp_path):
    good = chat_rows(3)
    path = tmp_path / "log.jsonl"
    with path.open("wb") as handle:
        handle.write((json.dumps(good[0], ensure_ascii=False) + "\n").encode())
        handle.write(b'{"message_id": "raw", "text": "\xff\xfe"}\n')  # invalid UTF-8 in the file
        handle.write(b'{"message_id": "esc", "text": "\\udcff"}\n')  # an escaped lone surrogate
        handle.write(b'{"message_id": "id\xff", "text": "ok"}\n')  # the bad bytes are in the id
        handle.write((json.dumps(good[1], ensure_ascii=False) + "\n").encode())
    summary, out = run(tmp_path, [path], tiny_model_dir)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert summary["rows_in"] == 5 and pq.read_table(out / "predictions.parquet").column("message_id").to_pylist() == ["m0", "m1"]
    assert [(e["row"], e["message_id"]) for e in errors] == [(2, "raw"), (3, "esc"), (4, "id\\udcff")]
    assert all("not valid UTF-8" in e["reason"] for e in errors)
    assert "'text'" in errors[0]["reason"] and "'message_id'" in errors[2]["reason"]


def test_ray_gpu_workers_need_no_gpu_on_the_driver(tiny_model_dir, monkeypatch):
    from serve.batch.ray_engine import describe_run

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    config = BatchConfig(["in"], "out", model=str(tiny_model_dir), engine="ray", ray_num_gpus=1)
    assert describe_run(config)["device"] == "cuda (Ray workers)"
    with pytest.raises(ValueError, match="no CUDA GPU"):  # without Ray GPUs, cuda must be on this machine
        describe_run(BatchConfig(["in"], "out", model=str(tiny_model_dir), engine="ray", device="cuda"))


def test_a_truncated_gzip_or_broken_parquet_file_ends_in_one_error_row_and_the_job_goes_on(tiny_model_dir, tmp_path):
    whole = gzip.compress("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chat_rows(400)).encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not a parquet file")
    good = write_jsonl(tmp_path / "good.jsonl", chat_rows(5))
    summary, out = run(tmp_path, [tmp_path / "broken.parquet", tmp_path / "cut.jsonl.gz", good], tiny_model_dir)
    predictions = pq.read_table(out / "predictions.parquet")
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [Path(e["file"]).name for e in errors] == ["broken.parquet", "cut.jsonl.gz"]
    assert "cannot be read past row 0" in errors[0]["reason"] and "EOFError" in errors[1]["reason"]
    from_cut = predictions.filter(pc.equal(predictions["file"], str(tmp_path / "cut.jsonl.gz"))).num_rows
    assert 0 < from_cut < 400 and errors[1]["row"] == from_cut + 1
    assert predictions.num_rows == from_cut + 5 and summary["rows_in"] == predictions.num_rows + len(errors)


def test_a_full_disk_fails_clearly_leaves_nothing_half_written_and_the_rerun_resumes(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import errno

    from serve.batch import engine
    from serve.cli import main

    log = write_jsonl(tmp_path / "log.jsonl", chat_rows(50))
    args = [
        "batch",
        str(log),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(tiny_model_dir),
        "--precision",
        "fp32",
        "--chunk-rows",
        "16",
        "--quiet",
    ]
    write_table, written = engine.pq.write_table, []

    def fills_the_disk_on_the_third_part(table, where, *a, **k):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        written.append(where)
        return write_table(table, where, *a, **k)

    monkeypatch.setattr(engine.pq, "write_table", fills_the_disk_on_the_third_part)
    assert main(args) == 1
    assert "No space left on device" in capsys.readouterr().err
    out = tmp_path / "out"
    assert not (out / "summary.json").exists() and not (out / "predictions.parquet").exists()
    assert not list(out.rglob("*.tmp")) and len(list((out / "_parts").glob("part-*.parquet"))) == 2
    monkeypatch.setattr(engine.pq, "write_table", write_table)
    assert main(args) == 0
    clean = tmp_path / "clean"
    assert main([*args[:3], str(clean), *args[4:]]) == 0
    assert pq.read_table(out / "predictions.parquet").equals(pq.read_table(clean / "predictions.parquet"))


def test_message_text_never_reaches_the_logs_or_stderr(tiny_model_dir, tmp_path, caplog, capsys):
    import logging

    from serve.cli import main

    secret = "不给钱就差评秘密内容"
    rows = [
        *chat_rows(5),
        {"message_id": "s", "conversation_id": "c1", "text": secret},
        {"message_id": "bad", "text": secret, "sender_role": "robot"},
        '{"text": "' + secret,
    ]
    log = write_jsonl(tmp_path / "log.jsonl", rows)
    with caplog.at_level(logging.DEBUG):
        code = main(
            ["--verbose", "batch", str(log), "--output", str(tmp_path / "out"), "--model", str(tiny_model_dir), "--precision", "fp32"]
        )
    captured = capsys.readouterr()
    assert code == 3 and secret not in caplog.text and secret not in captured.err and secret not in captured.out
    assert secret not in (tmp_path / "out" / "errors.jsonl").read_text(encoding="utf-8")  # reasons name the problem, not the text


KILL_POINTS = (
    "reading",
    "first-score",
    "third-score",
    "part-errors-written",
    "part-parquet-half-written",
    "after-two-parts",
    "predictions-written",
    "rollups-half-written",
    "report",
    "summary",
)


def _die_at(config, point):
    """Run the job and die as kill -9 would (os._exit: no cleanup) at ``point``."""
    import os

    import serve.batch.engine as engine
    import serve.batch.outputs as outputs
    import serve.batch.report as report

    def die(*_, **__):
        os._exit(9)

    def after(calls: int, function, then_die_before: bool = False):
        count = [0]

        def wrapped(*args, **kwargs):
            count[0] += 1
            if count[0] == calls and then_die_before:
                die()
            result = function(*args, **kwargs)
            if count[0] == calls and not then_die_before:
                die()
            return result

        return wrapped

    if point == "reading":
        original = engine.read_file

        def read_then_die(*args, **kwargs):
            for number, row in enumerate(original(*args, **kwargs)):
                if number == 40:
                    die()
                yield row

        engine.read_file = read_then_die
    elif point == "first-score":
        engine.Scorer.submit = after(1, engine.Scorer.submit, then_die_before=True)
    elif point == "third-score":
        engine.Scorer.submit = after(3, engine.Scorer.submit, then_die_before=True)
    elif point == "part-errors-written":  # a part's error file is written, its predictions not yet
        engine.atomic_write = after(3, engine.atomic_write, then_die_before=True)
    elif point == "part-parquet-half-written":
        original_write = engine.pq.write_table
        count = [0]

        def half(table, where, *args, **kwargs):
            count[0] += 1
            if count[0] == 3:
                Path(where).write_bytes(b"PAR1 half")
                die()
            return original_write(table, where, *args, **kwargs)

        engine.pq.write_table = half
    elif point == "after-two-parts":
        engine.write_part = after(2, engine.write_part)
    elif point == "predictions-written":
        outputs.write_rollups = die
    elif point == "rollups-half-written":
        outputs.pq.write_table = after(2, outputs.pq.write_table)
    elif point == "report":
        report.write_report = die
    elif point == "summary":
        outputs.write_text_atomically = die
    engine.run_local(config)


def test_kill_9_at_ten_points_then_the_rerun_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    log = write_jsonl(tmp_path / "log.jsonl", [*chat_rows(90)[:45], {"message_id": "bad", "text": " "}, *chat_rows(90)[45:]])
    _, reference = run(tmp_path / "reference", [log], tiny_model_dir)
    spawn = multiprocessing.get_context("spawn")
    for point in KILL_POINTS:
        out = tmp_path / point
        config = BatchConfig([str(log)], str(out), model=tiny_model_dir, chunk_rows=16, quiet=True, precision="fp32")
        process = spawn.Process(target=_die_at, args=(config, point))
        process.start()
        process.join(120)
        assert process.exitcode == 9, point
        assert not (out / "summary.json").exists(), point  # never presented as finished
        summary = run_local(config)
        assert summary["rows_in"] == 91 and summary["errors"] == 1, point
        for name in ("predictions", "conversations", "senders", "shops"):
            assert pq.read_table(out / f"{name}.parquet").equals(pq.read_table(reference / f"{name}.parquet")), (point, name)
        assert (out / "errors.jsonl").read_bytes() == (reference / "errors.jsonl").read_bytes(), point
        assert not list(out.rglob("*.tmp")) and not (out / "_parts").exists(), point


def test_order_fields_are_carried_into_the_predictions(tiny_model_dir, tmp_path):
    records = [r | {"order_id": f"o{i}", "buyer": f"acct{i}"} for i, r in enumerate(chat_rows(5))]
    _, out = run(tmp_path, [write_jsonl(tmp_path / "log.jsonl", records)], tiny_model_dir, columns={"order_account_id": "buyer"})
    predictions = pq.read_table(out / "predictions.parquet").to_pylist()
    assert [(p["order_id"], p["order_account_id"]) for p in predictions] == [(f"o{i}", f"acct{i}") for i in range(5)]
