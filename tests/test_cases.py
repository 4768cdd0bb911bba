"""Linking flagged senders into cases: shared ids and reused wording join them, short common demands never do."""

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serve.batch.outputs import PREDICTION_SCHEMA
from serve.cases import CaseSettings, run_cases
from serve.cli import main

LONG_DEMAND = "你家这个吹风机我用着还行，但是评价这事得看你诚意，转我{}块，我保证不写差评，不然我们几个人一起来"


def row(n: int, sender: str, shop: str, text: str, label: str = "extortion", conversation: str | None = None) -> dict:
    return {
        "file": "log.jsonl",
        "row": n,
        "message_id": f"m{n}",
        "conversation_id": conversation or f"{sender}-{shop}",
        "sender_id": sender,
        "sender_role": "buyer",
        "shop_id": shop,
        "ts": None,
        "time": dt.datetime(2026, 11, 1, tzinfo=dt.UTC) + dt.timedelta(hours=n),
        "text": text,
        "label": label,
        "p_extortion": 0.9 if label == "extortion" else 0.1,
        "p_coercion": 0.0,
        "p_complaint": 0.05,
        "p_normal": 0.05,
        "truncated": False,
        "model_version": "tiny-v1",
    }


@pytest.fixture
def scored(tmp_path):
    rows = [
        # gang A: three accounts, three shops, one Alipay account; a1 chases its demand once (counted once) and stages one
        row(1, "a1", "shop1", "不想被差评就转600到支付宝 gang_a@163.com"),
        row(2, "a1", "shop1", "600呢？今天不到账差评就上"),
        row(3, "a2", "shop2", "先转300到支付宝 gang_a@163.com，删完评价再给500"),
        row(4, "a3", "shop3", "老规矩，支付宝 gang_a@163.com，800，不然一星伺候"),
        # gang B: two accounts in two shops, the same long demand with different sums
        row(5, "b1", "shop4", LONG_DEMAND.format(1000)),
        row(6, "b2", "shop5", LONG_DEMAND.format(1200)),
        # a lone extortionist, and two strangers whose short demands happen to match (a weak link only)
        row(7, "c1", "shop6", "给我两千，不然天天差评，微信 lone_wolf88"),
        row(11, "c1", "shop6", "再加五百，打到支付宝 lone_1@163.com", label="normal"),  # a turn the model missed, same chat
        row(8, "d1", "shop7", "钱呢？不给就差评"),
        row(9, "d2", "shop8", "钱呢？不给就差评"),
        # not flagged: never read, whatever it says
        row(10, "e1", "shop9", "支付宝 gang_a@163.com 是我的收款账户", label="normal"),
    ]
    folder = tmp_path / "night"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), folder / "predictions.parquet")
    return folder


def test_senders_are_linked_by_shared_ids_and_long_reused_wording_only(scored, tmp_path):
    table = run_cases(CaseSettings(str(scored), str(tmp_path / "cases"), evidence=False))
    cases = {tuple(r["members"]): r for r in table.to_pylist()}
    assert set(cases) == {("a1", "a2", "a3"), ("b1", "b2"), ("c1",), ("d1",), ("d2",)}
    gang_a = cases[("a1", "a2", "a3")]
    assert gang_a["total_demanded"] == 600 + 300 + 500 + 800 and gang_a["max_demanded"] == 800
    assert gang_a["shops"] == ["shop1", "shop2", "shop3"] and gang_a["demands"] == 4
    assert gang_a["identifiers"] == ["alipay " + "*" * 10 + ".com"] and any("shared alipay" in r for r in gang_a["link_reasons"])
    assert cases[("b1", "b2")]["link_reasons"] == ["reused wording"] and cases[("b1", "b2")]["total_demanded"] == 2200
    lone = cases[("c1",)]  # the missed turn adds its sum and id, but is not counted as a flagged demand
    assert lone["total_demanded"] == 2500 and lone["demands"] == 1 and [i.split()[0] for i in lone["identifiers"]] == ["alipay", "wechat"]
    assert table.column("total_demanded").to_pylist() == sorted(table.column("total_demanded").to_pylist(), reverse=True)


def test_case_files_open_from_disk_with_ids_in_full_and_the_index_links_them(scored, tmp_path, capsys, tiny_model_dir):
    assert main(["cases", str(scored), "--out", str(tmp_path / "cases"), "--model", str(tiny_model_dir)]) == 0
    assert "5 cases, 2 of several senders" in capsys.readouterr().err
    index = (tmp_path / "cases" / "index.html").read_text(encoding="utf-8")
    files = sorted((tmp_path / "cases").glob("case-*.html"))
    assert len(files) == 5 and all(f'href="{f.name}"' in index for f in files)
    gang = next(f.read_text(encoding="utf-8") for f in files if "gang_a@163.com" in f.read_text(encoding="utf-8"))
    assert "<script" not in gang and "http" not in gang  # nothing to run or fetch
    assert "a1" in gang and "shop3" in gang and "tiny-v1" in gang and "2,200" in gang
    assert "gang_a@163.com" not in pq.read_table(tmp_path / "cases" / "cases.parquet").to_pandas().to_string()
    assert "evidence words" in gang and "evidence words scored by" in gang


def test_evidence_words_are_words_of_flagged_messages_only(tiny_model_dir):
    import jieba

    from serve.cases import add_evidence_words

    rows = [
        {"text": "不想被差评就转600到支付宝", "sender_role": "buyer", "flagged": True},
        {"text": "好的亲", "sender_role": "seller", "flagged": False},
    ]
    add_evidence_words(rows, str(tiny_model_dir))
    assert set(rows[0]["evidence"]) <= set(jieba.cut(rows[0]["text"])) and len(rows[0]["evidence"]) <= 3
    assert rows[1]["evidence"] == [] and rows[0]["evidence_model"] == rows[1]["evidence_model"]


def test_cases_refuses_a_folder_without_predictions(tmp_path):
    assert main(["cases", str(tmp_path), "--out", str(tmp_path / "cases")]) == 2


def test_order_fields_join_the_ordering_account_and_senders_pressing_over_one_order(tmp_path):
    rows = [
        # h2 bargains over the order h1 placed (and reviewed); h3 presses over the same order later. No shared id or wording.
        row(1, "h2", "shop1", "差评是我们写的，想删就拿一千出来") | {"order_id": "o-77", "order_account_id": "h1"},
        row(2, "h3", "shop1", "考虑好没有，八百也行，不然追评") | {"order_id": "o-77", "order_account_id": "h1"},
        # a buyer pressing over an order of its own links to nobody
        row(3, "k1", "shop2", "给我五百不然差评") | {"order_id": "o-88", "order_account_id": "k1"},
    ]
    folder = tmp_path / "night"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), folder / "predictions.parquet")
    table = run_cases(CaseSettings(str(folder), str(tmp_path / "cases"), evidence=False))
    cases = {tuple(r["members"]): r for r in table.to_pylist()}
    assert set(cases) == {("h1", "h2", "h3"), ("k1",)}
    reasons = cases[("h1", "h2", "h3")]["link_reasons"]
    assert "both pressed over order o-77" in reasons and any("placed by one" in r for r in reasons)


def test_cases_read_batch_outputs_written_before_the_order_fields(scored, tmp_path):
    old = pq.read_table(scored / "predictions.parquet").drop_columns(["order_id", "order_account_id"])
    pq.write_table(old, scored / "predictions.parquet")
    table = run_cases(CaseSettings(str(scored), str(tmp_path / "cases"), evidence=False))
    assert ("a1", "a2", "a3") in {tuple(r["members"]) for r in table.to_pylist()}
