"""From flagged messages to cases: ``extortion-guard cases BATCH_OUTPUT --out CASES``.

Only the flagged rows of a batch job's ``predictions.parquet`` are read (extortion, and with ``--coercion`` coercion
too), with the same senders' other turns in those conversations, so memory follows the number of demands, not the
size of the log. Each flagged message's demand details
come from :mod:`serve.demands`. Senders are then linked:

- **shared id** (strong): two senders gave the same payment or contact id (Alipay, WeChat, QQ, bank card, phone);
- **reused wording** (strong when the demand is long, weak when short): two senders sent near-duplicate demands
  (character 3-gram Jaccard ≥ 0.6 with numbers masked and ids left out, :func:`training.splits.near_duplicate_pairs`) to different
  shops. Short demands (fewer than ``min_wording_chars``, 20, characters once normalised: a chase such as
  "钱呢？今天不到账差评就发了") are what anyone might write, so their links are weak;
- **order** (strong), where the log has ``order_id`` and ``order_account_id``: the account that placed the order a
  sender pressed over, when that is another account (it joins the case even if it never wrote), and two senders who
  pressed over the same order.

A case is a group of senders joined by strong links (a sender alone is a case of one); weak links are listed as
support inside a case and never join two. Outputs: ``cases.parquet`` (ids masked), one self-contained HTML file
per case (ids in full: the case file is for the risk team and the wronged seller) and ``index.html`` sorted by the
total demanded. The total demanded sums, per conversation, the distinct amounts asked for, so a demand repeated
while chasing counts once and each stage of a payment plan counts.
"""

from __future__ import annotations

import hashlib
import html
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from model.files import write_text_atomically
from model.options import option

from .demands import Identifier, demanded_amounts, identifiers, without_identifiers

COLUMNS = ["file", "row", "message_id", "conversation_id", "sender_id", "sender_role", "shop_id", "time", "text", "label"]
ORDER_COLUMNS = ["order_id", "order_account_id"]  # absent from the outputs of earlier versions
CASE_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("members", pa.list_(pa.string())),
        ("shops", pa.list_(pa.string())),
        ("first_time", pa.timestamp("us", tz="UTC")),
        ("last_time", pa.timestamp("us", tz="UTC")),
        ("demands", pa.int64()),
        ("total_demanded", pa.float64()),
        ("max_demanded", pa.float64()),
        ("channels", pa.list_(pa.string())),
        ("identifiers", pa.list_(pa.string())),
        ("link_reasons", pa.list_(pa.string())),
    ]
)


@dataclass
class CaseSettings:
    """What ``extortion-guard cases`` reads and how it links (``--help`` shows each field)."""

    scored: str = option(help="A batch output folder (or its predictions.parquet).", positional=True)
    out: str = option(help="Folder for cases.parquet, index.html and one HTML file per case.")
    coercion: bool = option(False, "Also link the senders of coercion (threats pressing a claim), not only extortion.")
    wording_similarity: float = option(0.6, "Character 3-gram Jaccard (numbers masked) at which two demands are reused wording.")
    min_wording_chars: int = option(20, "Demands shorter than this (normalised) link only weakly: anyone might write them.")
    evidence: bool = option(True, "Show the words that pushed each flagged message toward extortion (the model reads it again).")
    model: str | None = option(None, "Model for the evidence words; none: the current model.")

    def __post_init__(self) -> None:
        if not 0.5 <= self.wording_similarity <= 1.0:
            raise ValueError(f"--wording-similarity must be in [0.5, 1], got {self.wording_similarity}")


@dataclass
class Link:
    a: str
    b: str
    reason: str
    strong: bool


@dataclass
class Case:
    members: list[str]
    rows: list[dict]
    links: list[Link] = field(default_factory=list)

    @property
    def case_id(self) -> str:
        return "case-" + hashlib.sha1("\n".join(sorted(self.members)).encode()).hexdigest()[:10]

    def total_demanded(self) -> float:
        per_conversation: dict[str, set[float]] = defaultdict(set)
        for row in self.rows:
            per_conversation[row["conversation_id"] or row["message_id"]].update(row["amounts"])
        return float(sum(sum(amounts) for amounts in per_conversation.values()))

    def record(self) -> dict:
        times = [r["time"] for r in self.rows if r["time"] is not None]
        ids = sorted({(i.kind, i.value) for r in self.rows for i in r["ids"]})
        return {
            "case_id": self.case_id,
            "members": sorted(self.members),
            "shops": sorted({r["shop_id"] for r in self.rows if r["shop_id"]}),
            "first_time": min(times, default=None),
            "last_time": max(times, default=None),
            "demands": sum(r["flagged"] for r in self.rows),
            "total_demanded": self.total_demanded(),
            "max_demanded": max((a for r in self.rows for a in r["amounts"]), default=0.0),
            "channels": sorted({kind for kind, _ in ids}),
            "identifiers": [f"{kind} {Identifier(kind, value).masked()}" for kind, value in ids],
            "link_reasons": sorted({link.reason for link in self.links}),
        }


def flagged_rows(predictions: Path, labels: tuple[str, ...]) -> list[dict]:
    """The flagged rows, and the same senders' other turns in the same conversations (an opening demand the model
    missed still names the sum and the account), each with its demand details. Filters are pushed into the Parquet
    reader: memory follows the flagged conversations, not the log."""
    columns = COLUMNS + [c for c in ORDER_COLUMNS if c in pq.read_schema(predictions).names]
    flagged = pq.read_table(predictions, columns=columns, filters=[("label", "in", list(labels))]).to_pylist()
    conversations = sorted({r["conversation_id"] for r in flagged if r["conversation_id"] is not None})
    senders = {(r["conversation_id"], r["sender_id"]) for r in flagged}
    around = (
        pq.read_table(predictions, columns=columns, filters=[("conversation_id", "in", conversations)]).to_pylist() if conversations else []
    )
    taken = {r["message_id"] for r in flagged}
    rows = flagged + [r for r in around if (r["conversation_id"], r["sender_id"]) in senders and r["message_id"] not in taken]
    for row in rows:
        row["flagged"] = row["label"] in labels
        row["sender"] = row["sender_id"] or f"conversation:{row['conversation_id'] or row['message_id']}"
        row["amounts"], row["ids"] = demanded_amounts(row["text"]), identifiers(row["text"])
    return rows


def find_links(rows: list[dict], settings: CaseSettings) -> list[Link]:
    """Shared ids and reused wording between different senders (see the module docstring)."""
    from training.splits import near_duplicate_pairs, normalise_for_duplicates

    links, first_user = [], {}
    for row in rows:
        for identifier in row["ids"]:
            key = (identifier.kind, identifier.value)
            if key in first_user and first_user[key] != row["sender"]:
                links.append(Link(first_user[key], row["sender"], f"shared {identifier.kind} {identifier.masked()}", True))
            first_user.setdefault(key, row["sender"])
        links += order_links(row, first_user)
    if len(rows) > 1:
        # The wording without the ids, which link on their own: the same script with another account is reused wording.
        wording = [without_identifiers(r["text"]) for r in rows]
        for i, j in near_duplicate_pairs(wording, settings.wording_similarity).tolist():
            a, b = rows[i], rows[j]
            if a["sender"] != b["sender"] and a["shop_id"] != b["shop_id"]:
                shortest = min(len(normalise_for_duplicates(wording[i])), len(normalise_for_duplicates(wording[j])))
                long = shortest >= settings.min_wording_chars
                links.append(Link(a["sender"], b["sender"], "reused wording" if long else "reused short wording", long))
    unique = {(min(k.a, k.b), max(k.a, k.b), k.reason): k for k in links}  # one line per pair and reason in a case file
    return list(unique.values())


def order_links(row: dict, first_user: dict) -> list[Link]:
    """The platform's own records: the account that placed the order this sender pressed over (when another), and an
    earlier sender who pressed over the same order. Both are strong; the ordering account joins the case even if it
    never wrote in the chat."""
    order, account = row.get("order_id"), row.get("order_account_id")
    links = []
    if account and account != row["sender"]:
        links.append(Link(account, row["sender"], f"order {order or '(no id)'}: placed by one, pressed over by the other", True))
    if order:
        key = ("order", order)
        if key in first_user and first_user[key] != row["sender"]:
            links.append(Link(first_user[key], row["sender"], f"both pressed over order {order}", True))
        first_user.setdefault(key, row["sender"])
    return links


def build_cases(rows: list[dict], links: list[Link]) -> list[Case]:
    """Groups of senders joined by strong links; weak links are kept inside a case only."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    senders = sorted({r["sender"] for r in rows} | {account for link in links for account in (link.a, link.b)})
    index = {s: i for i, s in enumerate(senders)}
    strong = [(index[link.a], index[link.b]) for link in links if link.strong]
    graph = coo_matrix(([1] * len(strong), ([a for a, _ in strong], [b for _, b in strong])), shape=(len(senders), len(senders)))
    _, component = connected_components(graph, directed=False)
    cases: dict[int, Case] = {}
    for sender, c in zip(senders, component, strict=True):
        cases.setdefault(c, Case([], [])).members.append(sender)
    for row in rows:
        cases[component[index[row["sender"]]]].rows.append(row)
    for link in links:
        if component[index[link.a]] == component[index[link.b]]:
            cases[component[index[link.a]]].links.append(link)
    return sorted(cases.values(), key=lambda case: (-case.total_demanded(), case.case_id))


def write_cases(cases: list[Case], out: Path, model_version: str | None) -> pa.Table:
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([case.record() for case in cases], schema=CASE_SCHEMA)
    pq.write_table(table, out / "cases.parquet")
    for case in cases:
        write_text_atomically(out / f"{case.case_id}.html", case_html(case, model_version))
    write_text_atomically(out / "index.html", index_html(table))
    return table


def run_cases(settings: CaseSettings) -> pa.Table:
    scored = Path(settings.scored)
    predictions = scored / "predictions.parquet" if scored.is_dir() else scored
    if not predictions.is_file():
        raise ValueError(f"{settings.scored}: no predictions.parquet (give a batch output folder or its predictions file)")
    rows = flagged_rows(predictions, ("extortion", "coercion") if settings.coercion else ("extortion",))
    versions = pq.read_table(predictions, columns=["model_version"]).column("model_version")
    model_version = pc.unique(versions)[0].as_py() if len(versions) else None
    if settings.evidence:
        add_evidence_words(rows, settings.model)
    return write_cases(build_cases(rows, find_links(rows, settings)), Path(settings.out), model_version)


def add_evidence_words(rows: list[dict], model: str | None, top: int = 3) -> None:
    """``evidence``: the (at most ``top``) words whose removal most lowers each flagged message's extortion log-odds,
    scored on the message alone (the predictions do not keep the context the model saw)."""
    from model.classifier import ExtortionClassifier
    from model.data_format import Message

    from .evidence import word_scores

    classifier = ExtortionClassifier.from_pretrained(model, device="cpu")
    for row in rows:
        scores = word_scores(classifier, Message(row["text"], role=row["sender_role"])) if row["flagged"] else []
        row["evidence"] = [word for word, score in sorted(scores, key=lambda ws: -ws[1])[:top] if score > 0]
        row["evidence_model"] = classifier.version


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
)


def _page(title: str, body: str) -> str:
    """A page with no script and nothing fetched: it opens from disk."""
    head = f'<meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style>'
    return f'<!doctype html><html lang="zh"><head>{head}</head><body>{body}</body></html>\n'


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def case_html(case: Case, model_version: str | None) -> str:
    """One case: summary, the links and why they hold, the ids in full, and the timeline of demands across shops."""
    record = case.record()
    ids = sorted({(i.kind, i.value) for r in case.rows for i in r["ids"]})
    timeline = sorted(case.rows, key=lambda r: (r["time"] is None, r["time"] or 0, r["message_id"] or ""))
    summary = [
        ["members", ", ".join(record["members"])],
        ["shops", ", ".join(record["shops"])],
        ["first / last", f"{record['first_time']} / {record['last_time']}"],
        ["demands", record["demands"]],
        ["total / largest demanded (yuan)", f"{record['total_demanded']:,.0f} / {record['max_demanded']:,.0f}"],
        ["model", model_version or "unknown"],
    ]
    links = [[k.a, k.b, k.reason, "strong" if k.strong else "weak (support only)"] for k in case.links]
    moments = [
        [
            r["time"],
            r["shop_id"],
            r["sender"],
            r["label"],
            r["text"],
            "、".join(r.get("evidence", [])),
            ", ".join(f"{a:g}" for a in r["amounts"]),
        ]
        for r in timeline
    ]
    evidence_models = sorted({r["evidence_model"] for r in case.rows if "evidence_model" in r})
    if evidence_models:
        summary.append(["evidence words scored by", ", ".join(evidence_models)])
    files = ", ".join(sorted({r["file"] or "" for r in case.rows}))
    body = (
        f"<h1>{record['case_id']}</h1>{_table(['', ''], summary)}"
        f"<h2>Links</h2>{_table(['between', 'and', 'why', 'strength'], links) if links else '<p>One sender, no links.</p>'}"
        f"<h2>Payment and contact ids (in full)</h2>{_table(['kind', 'id'], [list(i) for i in ids]) if ids else '<p>None given.</p>'}"
        f"<h2>Timeline</h2>{_table(['time', 'shop', 'sender', 'verdict', 'message', 'evidence words', 'amounts'], moments)}"
        f"<p>From {record['demands']} flagged messages and {len(case.rows) - record['demands']} other turns of the same senders "
        f"in those conversations, in {html.escape(files)}.</p>"
    )
    return _page(record["case_id"], body)


def index_html(table: pa.Table) -> str:
    """Every case, largest total demanded first, each opening its case file."""
    headers = "".join(f"<th>{h}</th>" for h in ("case", "senders", "shops", "demands", "total demanded", "links"))
    rows = "".join(
        f'<tr><td><a href="{html.escape(r["case_id"])}.html">{html.escape(r["case_id"])}</a></td><td>{len(r["members"])}</td>'
        f"<td>{len(r['shops'])}</td><td>{r['demands']}</td><td>{r['total_demanded']:,.0f}</td>"
        f"<td>{html.escape(', '.join(r['link_reasons']))}</td></tr>"
        for r in table.to_pylist()
    )
    return _page("Cases", f"<h1>Cases, by total demanded</h1><table><tr>{headers}</tr>{rows}</table>")
