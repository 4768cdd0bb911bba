"""Demand details on written tables: the sums asked for and the payment or contact ids.

Three writers wrote three tables. The rules were written against ``demand_cases.jsonl`` (130 cases), then
scored once on ``demand_cases_heldout.jsonl`` (100; amounts 89 exact, ids 99) and mended where it showed them
wrong, which makes it a table they were written against too; ``demand_cases_fresh.jsonl`` (100) was scored once
after that (amounts 89, ids 98), and only two plain bugs it showed were mended (Chinese characters read as part
of a WeChat id, an order number after 是). The tables written against must stay at 95%; the fresh one at the
level first measured, rounded down.
"""

import json
from pathlib import Path

import pytest

from serve.demands import Identifier, demanded_amounts, identifiers

TABLES = {"demand_cases.jsonl": 0.95, "demand_cases_heldout.jsonl": 0.95, "demand_cases_fresh.jsonl": 0.85}


def cases(name: str) -> list[dict]:
    path = Path(__file__).parent / "data" / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize(("table", "share"), TABLES.items())
def test_amounts_and_identifiers_are_exact_on_the_written_tables(table, share):
    rows = cases(table)
    amounts_right = sum(demanded_amounts(c["text"]) == [float(a) for a in c["amounts"]] for c in rows)
    ids_right = sum([{"kind": i.kind, "value": i.value} for i in identifiers(c["text"])] == c["identifiers"] for c in rows)
    assert amounts_right >= share * len(rows), f"amounts exact on {amounts_right} of {len(rows)}"
    assert ids_right >= 0.95 * len(rows), f"identifiers exact on {ids_right} of {len(rows)}"


def test_identifiers_are_masked_to_their_last_four_characters():
    assert Identifier("phone", "13812345678").masked() == "*******5678"
    assert Identifier("qq", "1234").masked() == "1234"
    found = identifiers("支付宝 abc_1@163.com，卡号 6222 0202 0000 1234，qq 55667788，微信 Zhang_san-88")
    assert [(i.kind, i.masked()) for i in found] == [
        ("alipay", "*********.com"),
        ("bank_card", "************1234"),
        ("qq", "****7788"),
        ("wechat", "********n-88"),
    ]


def test_a_number_that_counts_or_reports_is_not_a_demand():
    assert demanded_amounts("五条差评，一条五十，一共给我两百五") == [50.0, 250.0]
    assert demanded_amounts("我花了399买的，7天了还没到，订单号 1234567890") == []
    assert demanded_amounts("第二笔三百今晚结清，1万2一分不能少") == [300.0, 12000.0]
