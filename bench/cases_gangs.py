"""Gang recovery: a generated night of chat with three hidden gangs, scored by ``batch`` and linked by ``cases``.

    python bench/cases_gangs.py [--messages 200000] [--shops 300] [--out runs/cases-gangs]

The gangs follow the Haimen pattern: several accounts, each pressing a few shops over several days, with a
scripted demand, a chase that repeats the sum and sometimes a second stage. Some accounts of a gang share only a
payment id with the others (their wording is their own), some only the gang's wording (no id given), and one
account never writes at all: it only places the orders (the log's ``order_id`` and ``order_account_id``) over which
the gang's last account bargains. Around them:
ordinary buyers and sellers (many of whom share the same everyday phrases), honest complaints, entitled threats,
and lone extortionists with their own wording and ids.

Prints a table: for each gang, the case that holds most of its accounts, membership precision and recall, and the
total demanded against the truth; then how many benign senders ended up in a case of several senders, and the
minutes of each step.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

PRODUCTS = ["吹风机", "保温杯", "连衣裙", "蓝牙耳机", "床单", "猫粮", "口红", "跑鞋", "台灯", "充电宝", "茶叶", "书包"]
EVERYDAY = [
    "在吗", "什么时候发货", "发货了吗", "好的谢谢", "收到了", "有优惠吗", "这个有现货吗", "能便宜点吗", "几天能到",
    "快递到哪了", "尺码偏大还是偏小", "可以开发票吗", "已经下单了", "麻烦尽快发货", "包邮吗", "颜色和图片一样吗",
]  # fmt: skip
SELLER = ["亲，已经发货了", "您好，48小时内发货", "亲，有现货的", "好的亲，给您备注了", "亲，可以开发票", "感谢支持～"]
COMPLAINTS = ["{p}用了两天就坏了，太失望了", "{p}和图片差太多了，差评", "物流太慢了，{p}等了一周", "{p}有划痕，客服也不回"]
COERCION = ["{p}是坏的，今天不给退款我就投诉到平台", "{p}少发了配件，不补发就差评", "说好的赠品没给，不补就给差评"]
# A lone extortionist's demand: one piece from each list, in a random order, so no two read alike.
LONE_PIECES = [
    ["东西我收到了", "{p}到了", "你家{p}我看过了", "昨天拿到货", "{p}一般般吧", "快递今天才到", "货是到了", "包装都破了"],
    ["给{a}块辛苦费", "转{a}给我", "{a}块钱的事", "补我{a}", "v我{a}", "拿{a}出来", "意思一下{a}", "{a}元红包"],
    ["不然差评", "否则天天追评", "要不我去投诉", "不给就一星", "不然发小红书", "评价你自己看着办", "不然曝光你", "否则差评伺候"],
    ["{c}", "{c}联系", "加{c}", "{c}转我"],
]
GANG_SCRIPTS = [
    "老板，你家{p}我们几个人都买了，评价怎么写你心里有数，拿{a}块出来大家相安无事，不然差评一起上，转到{c}",
    "亲，{p}收到了，我们团队专做店铺口碑，差评已经写好了，{a}元删评，过时不候，款打到{c}",
    "你家{p}质量我就不说了，识相的话{a}块钱私了，差评我不发，不识相我们一群人天天来，账户{c}",
]
CHASES = ["{a}呢？今天不到账差评就发了", "钱还没到，{a}，别逼我", "考虑好了没，{a}块，最后一天"]  # one per gang
SECOND_STAGES = ["第一笔收到了，第二笔{a}今晚结清，这事就算过去了", "还差{a}，付完就删", "尾款{a}，到了我就改好评"]


def contact(rng: random.Random, kind: str) -> str:
    if kind == "alipay":
        return f"支付宝 {''.join(rng.choices('abcdefghjkmnpqrstuvwxyz', k=6))}{rng.randint(10, 99)}@163.com"
    return f"微信 {''.join(rng.choices('abcdefghjkmnpqrstuvwxyz', k=5))}_{rng.randint(100, 999)}"


def generate(messages: int, shops: int, seed: int = 0) -> tuple[list[dict], dict]:
    """The log's rows (time order) and the truth: each gang's accounts and total demanded."""
    rng = random.Random(seed)
    rows: list[dict] = []
    truth: dict[str, dict] = {}
    start = 1_764_000_000

    def conversation(sender: str, shop: str, turns: list[tuple[str, str]], day: int, orderer: str | None = None) -> None:
        cid = f"c{len(rows)}-{sender}-{shop}"
        order = {"order_id": f"o{len(rows)}", "order_account_id": orderer or sender}  # the chat is about one order
        t = start + day * 86_400 + rng.randint(0, 80_000)
        for n, (role, text) in enumerate(turns):
            sender_id = sender if role == "buyer" else f"seller-{shop}"
            rows.append({"message_id": f"m{len(rows)}", "conversation_id": cid, "sender_id": sender_id, "sender_role": role,
                         "shop_id": shop, "ts": t + 60 * n, "text": text, **order})  # fmt: skip

    for g in range(3):  # the gangs
        gang, script, paid_to = f"gang{g}", GANG_SCRIPTS[g], contact(rng, "alipay" if g != 1 else "wechat")
        accounts = [f"{gang}-acct{k}" for k in range(rng.randint(4, 6))]
        # The Haimen split: an account that only orders (and reviews) for the last bargaining account, never writing in chat.
        orderer = f"{gang}-orderer"
        truth[gang] = {"accounts": {*accounts, orderer}, "total": 0.0}
        for k, account in enumerate(accounts):
            # account 0 shares only the payment id (own wording); account 1 only the wording (no id); the rest both
            for _ in range(rng.randint(2, 4)):
                shop, amount = f"shop{rng.randrange(shops)}", rng.choice([600, 800, 1000, 1500, 2000, 3000, 5000, 8800])
                if k == 0:  # its own words, the gang's account
                    pieces = [rng.choice(options) for options in LONE_PIECES[:3]]
                    rng.shuffle(pieces)
                    text = "，".join([*pieces, "{c}"]).format(p=rng.choice(PRODUCTS), a=amount, c=paid_to)
                else:
                    text = script.format(p=rng.choice(PRODUCTS), a=amount, c="私聊发你" if k == 1 else paid_to)
                turns = [("buyer", text), ("seller", "亲，这个要求我们不能答应")]
                amounts = {amount}
                if rng.random() < 0.5:
                    turns.append(("buyer", CHASES[g].format(a=amount)))
                if rng.random() < 0.3:
                    second = rng.choice([300, 500, 800])
                    turns.append(("buyer", SECOND_STAGES[g].format(a=second)))
                    amounts.add(second)
                truth[gang]["total"] += sum(amounts)
                conversation(account, shop, turns, rng.randrange(14), orderer if k == len(accounts) - 1 else None)
    for n in range(40):  # lone extortionists: their own wording and ids
        pieces = [rng.choice(options) for options in LONE_PIECES]
        rng.shuffle(pieces)
        lone = "，".join(pieces).format(p=rng.choice(PRODUCTS), a=rng.choice([200, 500, 1000]), c=contact(rng, "wechat"))
        conversation(f"lone{n}", f"shop{rng.randrange(shops)}", [("buyer", lone)], rng.randrange(14))
    n = 0
    while len(rows) < messages:  # everyone else
        buyer, shop, p = f"buyer{n % (messages // 8)}", f"shop{rng.randrange(shops)}", rng.choice(PRODUCTS)
        kind = rng.random()
        if kind < 0.85:
            turns = [("buyer", rng.choice(EVERYDAY)), ("seller", rng.choice(SELLER))] + [("buyer", rng.choice(EVERYDAY))] * rng.randint(
                0, 1
            )
        elif kind < 0.97:
            turns = [("buyer", rng.choice(COMPLAINTS).format(p=p)), ("seller", "非常抱歉，给您处理")]
        else:
            turns = [("buyer", rng.choice(COERCION).format(p=p)), ("seller", "亲，马上给您处理")]
        conversation(buyer, shop, turns, rng.randrange(14))
        n += 1
    rows.sort(key=lambda r: r["ts"])
    return rows[:messages], truth


def cli(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "serve.cli", *args], check=True)
    return (time.perf_counter() - started) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--shops", type=int, default=300)
    parser.add_argument("--out", default="runs/cases-gangs")
    parser.add_argument("--precision", default="auto", help="passed to batch")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, truth = generate(args.messages, args.shops)
    log = out / "log.jsonl"
    log.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    minutes = {"batch": cli("batch", str(log), "--output", str(out / "scored"), "--quiet", "--restart", "--precision", args.precision)}
    minutes["cases"] = cli("cases", str(out / "scored"), "--out", str(out / "cases"))
    cases = pq.read_table(out / "cases" / "cases.parquet").to_pylist()
    of_sender = {m: c for c in cases for m in c["members"]}
    print(f"\n{len(rows):,} messages, {args.shops} shops, {len(cases)} cases\n")
    print("| gang | accounts | case found | its senders | precision | recall | total demanded (truth) | found | error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for gang, facts in truth.items():
        overlap = defaultdict(int)
        for account in facts["accounts"]:
            if account in of_sender:
                overlap[of_sender[account]["case_id"]] += 1
        best = max(overlap, key=overlap.get) if overlap else None
        case = next((c for c in cases if c["case_id"] == best), None)
        members = set(case["members"]) if case else set()
        hit = len(members & facts["accounts"])
        precision, recall = (hit / len(members) if members else 0.0), hit / len(facts["accounts"])
        found = case["total_demanded"] if case else 0.0
        print(
            f"| {gang} | {len(facts['accounts'])} | {best} | {len(members)} | {precision:.3f} | {recall:.3f} | "
            f"{facts['total']:,.0f} | {found:,.0f} | {100 * (found - facts['total']) / facts['total']:+.2f}% |"
        )
    benign = [m for c in cases if len(c["members"]) > 1 for m in c["members"] if not m.startswith("gang")]
    print(f"\nbenign or lone senders in a case of several senders: {len(benign)}")
    print(f"minutes: {', '.join(f'{k} {v:.1f}' for k, v in minutes.items())}")


if __name__ == "__main__":
    main()
