"""The moderators' Gradio app, served with the JSON API by one uvicorn process.

Tabs: **Classify** (a message with optional earlier turns; the verdict, the prepared text
the model saw, the words that drove the extortion score, the demand's amount, channel
and threat type; then confirm or correct, which appends to the inbox), **Batch**
(upload a chat log, download predictions), **Review queue** (for a batch run's output folder:
the messages to label first, by value as `extortion-guard queue` orders them, with a ruling that lands
in the inbox with the queue's reason; and the top conversations) and **Cases** (the cases of an
`extortion-guard cases` folder, each opening its case file).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.parquet as pq

from model.data_format import Message, Turn, message_from_json
from model.inputs import message_text, preparation
from model.labels import LABELS, canonical_role

from .evidence import explain
from .inbox import append_decision, decision_record
from .settings import ServeSettings

UPLOAD_PREFIX = "eg-app-batch-"
UPLOAD_MAX_BYTES = 50 * 2**20  # the app scores uploads while the moderator waits; larger logs belong to `extortion-guard batch`
UPLOAD_KEEP_SECONDS = 3600


def remove_old_uploads(now: float | None = None) -> int:
    """Remove the app's scored uploads older than an hour (the moderator has downloaded them or left); returns how many."""
    now = time.time() if now is None else now
    old = [p for p in Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*") if now - p.stat().st_mtime > UPLOAD_KEEP_SECONDS]
    for folder in old:
        shutil.rmtree(folder, ignore_errors=True)
    return len(old)


EXAMPLES = [
    ["要么花钱消灾，要么更多的人来给你差评", "buyer", []],
    ["不给hb就cp，自己看着办", "buyer", []],
    ["不给💰就给查評，懂？", "buyer", []],
    ["钱呢？", "buyer", [["buyer", "给我800我就把差评删了"], ["seller", "亲，这个我们做不到"]]],
    ["已经转了800，请您把差评删掉", "seller", [["buyer", "给我800我就把差评删了"]]],
    ["今天不退款我就给差评，东西根本用不了", "buyer", []],
    ["收到的杯子是碎的，太失望了，只能给差评了", "buyer", []],
    ["在吗？什么时候发货", "buyer", []],
]
CASE_COLUMNS = ["case_id", "senders", "shops", "demands", "total_demanded", "links"]
CASE_ID = re.compile(r"case-[0-9a-f]{10}")
QUEUE_SIZE = 50
QUEUE_COLUMNS = ["queue_reason", "model_label", "p_extortion", "text"]
CONVERSATION_COLUMNS = ["conversation_id", "top_label", "max_p_extortion", "messages", "trigger_message_id", "shop_id", "last_time"]


def parse_context(rows) -> tuple[Turn, ...]:
    """Earlier turns from the context table: rows of (role, text), blank rows skipped."""
    turns = []
    for i, row in enumerate(rows or []):
        role, text = ([*list(row), "", ""])[:2]
        if not str(text or "").strip():
            continue
        if (sender := canonical_role(role)) is None:
            raise gr.Error(f"context row {i + 1}: role must be buyer or seller, not {str(role)[:20]!r}")
        turns.append(Turn(sender, str(text)))
    return tuple(turns)


def folders_holding(root: Path, name: str) -> list[str]:
    """Folders under ``root`` holding a file ``name``, with any reached through a symbolic link that leads outside
    ``root`` left out: the app opens only these, never a path typed by hand."""
    if not root.is_dir():
        return []
    inside = root.resolve()
    found = (p.parent for p in root.glob(f"**/{name}"))
    return sorted(str(folder) for folder in found if folder.resolve().is_relative_to(inside))


def review_folders(root: Path) -> list[str]:
    """Batch output folders the review queue may open."""
    return folders_holding(root, "conversations.parquet")


def folder_picker(folders, label: str, refresh_label: str) -> gr.Dropdown:
    """A dropdown of the folders ``folders()`` lists (never a path typed by hand) and a button that lists them again."""
    picker = gr.Dropdown(choices=folders(), label=label, allow_custom_value=False)
    gr.Button(refresh_label).click(lambda: gr.update(choices=folders()), None, picker)
    return picker


def build_app(classifier, settings: ServeSettings) -> gr.Blocks:
    prepare = preparation(classifier.text_preparation)

    def classify(text: str, sender: str, context_rows):
        if not (text or "").strip():
            raise gr.Error("the message is empty")
        if sender not in ("buyer", "seller"):
            raise gr.Error(f"sender must be buyer or seller, not {str(sender)[:20]!r}")
        message = Message(text, parse_context(context_rows), role=sender)
        prediction = classifier.predict(message)
        evidence = explain(classifier, message)
        details = {
            "amounts": evidence.amounts,
            "payment channels": evidence.channels,
            "identifiers (masked)": [f"{i['kind']} {i['masked']}" for i in evidence.identifiers],
            "threat types": evidence.threats,
        }
        state = {"message": message.to_json(), "label": prediction.label, "probabilities": prediction.probabilities}
        seen = message_text(message, prepare, classifier.role_marker)
        strongest = max((abs(score) for _, score in evidence.words), default=0.0) or 1.0
        words = [(word, score / strongest) for word, score in evidence.words]  # the colour scale runs from -1 to 1
        return prediction.probabilities, seen, words, details, gr.update(value=prediction.label), state

    def record_feedback(state, label: str, request: gr.Request):
        if not state:
            raise gr.Error("classify a message first")
        message = message_from_json(state["message"])
        record = decision_record(
            message, label, request.username or "anonymous", classifier.version, state["label"], state["probabilities"]
        )
        path = append_decision(record, settings.inbox)
        verb = "Confirmed" if label == state["label"] else f"Corrected {state['label']} → {label}"
        return f"{verb}; saved as {record['id']} in {path.name}"

    def score_upload(upload):
        from serve.batch import BatchConfig, run_local

        if upload is None:
            raise gr.Error("upload a .csv or .jsonl file first")
        if Path(upload).stat().st_size > UPLOAD_MAX_BYTES:
            raise gr.Error(f"the file is over {UPLOAD_MAX_BYTES // 2**20} MB: score it with `extortion-guard batch`")
        remove_old_uploads()
        out = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX))
        try:
            summary = run_local(BatchConfig([upload], str(out / "job"), quiet=True, model=None), classifier=classifier)
            csv_path = out / "predictions.csv"
            pyarrow.csv.write_csv(pq.read_table(out / "job" / "predictions.parquet"), csv_path)
        except ValueError as error:
            shutil.rmtree(out, ignore_errors=True)
            raise gr.Error(str(error)) from error
        finally:
            shutil.rmtree(out / "job", ignore_errors=True)  # only the CSV is offered for download
        counts = {k: summary[k] for k in ("rows_in", "predictions", "errors", "label_counts")}
        return str(csv_path), counts

    def batch_folders():
        return review_folders(settings.batch_root)

    def open_queue(folder: str):
        from training.review_queue import queue_records

        if folder not in batch_folders():  # only folders under batch_root, never a path typed by hand
            raise gr.Error("choose a batch output folder from the list")
        records = queue_records(Path(folder) / "predictions.parquet", QUEUE_SIZE)
        to_label = [[r["queue_reason"], r["model_label"], r["model_probabilities"]["extortion"], r["text"]] for r in records]
        table = pq.read_table(Path(folder) / "conversations.parquet").slice(0, 100).select(CONVERSATION_COLUMNS)
        return to_label, records, [[row[c] for c in CONVERSATION_COLUMNS] for row in table.to_pylist()]

    def pick_queued(records, evt: gr.SelectData):
        record = records[evt.index[0]]
        turns = [[t["role"], t["text"]] for t in record["context"]] + [[f"{record['role'] or 'buyer'} (to label)", record["text"]]]
        return record, turns, gr.update(value=record["model_label"])

    def save_queued_ruling(record, label: str, request: gr.Request):
        if not record:
            raise gr.Error("click a message in the list first")
        if label not in LABELS:
            raise gr.Error("choose a ruling")
        message = message_from_json({k: record[k] for k in ("id", "text", "context", "role")})
        decision = decision_record(
            message,
            label,
            request.username or "anonymous",
            record["model_version"],
            record["model_label"],
            record["model_probabilities"],
            queue_reason=record["queue_reason"],
        )
        path = append_decision(decision, settings.inbox)
        return f"Saved {decision['id']} ({label}, queued as {record['queue_reason']}) in {path.name}"

    def show_conversation(folder: str, evt: gr.SelectData):
        if folder not in batch_folders():
            raise gr.Error("choose a batch output folder from the list")
        conversation_id = evt.row_value[0]
        columns = ["ts", "sender_role", "text", "label", "p_extortion"]
        table = pq.read_table(Path(folder) / "predictions.parquet", columns=["conversation_id", *columns])
        rows = table.filter(pc.equal(table["conversation_id"], conversation_id)).select(columns).to_pylist()
        return [[r[c] for c in columns] for r in rows]

    def case_lists():
        return folders_holding(settings.batch_root, "cases.parquet")

    def open_cases(folder: str):
        if folder not in case_lists():
            raise gr.Error("choose a cases folder from the list")
        cases = pq.read_table(Path(folder) / "cases.parquet").to_pylist()
        return [
            [c["case_id"], len(c["members"]), len(c["shops"]), c["demands"], c["total_demanded"], ", ".join(c["link_reasons"])]
            for c in cases
        ]

    def show_case(folder: str, evt: gr.SelectData):
        case_id = str(evt.row_value[0])
        if folder not in case_lists() or not CASE_ID.fullmatch(case_id):
            raise gr.Error("choose a case from the list")
        return (Path(folder) / f"{case_id}.html").read_text(encoding="utf-8")

    with gr.Blocks(title="Extortion Guard") as app:
        gr.Markdown(f"## Extortion Guard · model `{classifier.version}`")
        with gr.Tab("Classify"):
            with gr.Row():
                with gr.Column():
                    message = gr.Textbox(label="Message", lines=3, elem_id="message")
                    sender = gr.Radio(["buyer", "seller"], value="buyer", label="Sent by", elem_id="sender")
                    context = gr.Dataframe(
                        value=[["", ""]],
                        headers=["role", "text"],
                        datatype=["str", "str"],
                        type="array",
                        column_count=(2, "fixed"),
                        row_count=(2, "dynamic"),
                        label="Earlier turns, oldest first (role: buyer or seller)",
                        elem_id="context",
                        interactive=True,
                    )
                    classify_button = gr.Button("Classify", variant="primary", elem_id="classify")
                    gr.Examples(EXAMPLES, inputs=[message, sender, context])
                with gr.Column():
                    verdict = gr.Label(label="Verdict", num_top_classes=len(LABELS), elem_id="verdict")
                    prepared = gr.Textbox(label="Prepared text (what the model saw)", interactive=False, elem_id="prepared")
                    evidence = gr.HighlightedText(
                        label="Evidence: what each word adds to the extortion log-odds (strongest = 1)", elem_id="evidence"
                    )
                    details = gr.JSON(label="Demand", elem_id="details")
                    correct = gr.Radio(list(LABELS), label="Your ruling", elem_id="ruling")
                    send = gr.Button("Confirm or correct", elem_id="send-feedback")
                    feedback = gr.Markdown(elem_id="feedback-status")
            state = gr.State()
            classify_button.click(classify, [message, sender, context], [verdict, prepared, evidence, details, correct, state])
            send.click(record_feedback, [state, correct], feedback)
        with gr.Tab("Batch"):
            upload = gr.File(label="Chat log: CSV or JSON Lines", file_types=[".csv", ".jsonl", ".json", ".gz"], type="filepath")
            score_button = gr.Button("Score", variant="primary")
            predictions = gr.File(label="Predictions (CSV)")
            batch_summary = gr.JSON(label="Summary")
            score_button.click(score_upload, upload, [predictions, batch_summary])
        with gr.Tab("Review queue"):
            folder = folder_picker(batch_folders, f"Batch output folder (under {settings.batch_root})", "Refresh list")
            to_label = gr.Dataframe(
                headers=QUEUE_COLUMNS,
                type="array",
                interactive=False,
                label="Label next, most valuable first (uncertain, keywords disagree; a fifth at random): click one",
                elem_id="to-label",
            )
            queued, picked = gr.State(), gr.State()
            with gr.Row():
                picked_turns = gr.Dataframe(
                    headers=["role", "text"], type="array", interactive=False, label="The message and its earlier turns"
                )
                with gr.Column():
                    queued_ruling = gr.Radio(list(LABELS), label="Your ruling", elem_id="queue-ruling")
                    save_ruling = gr.Button("Save ruling", elem_id="queue-save")
                    ruling_status = gr.Markdown(elem_id="queue-status")
            conversations = gr.Dataframe(
                headers=CONVERSATION_COLUMNS, type="array", interactive=False, label="Top conversations: click one"
            )
            thread = gr.Dataframe(
                headers=["ts", "sender_role", "text", "label", "p_extortion"], type="array", interactive=False, label="Conversation"
            )
            folder.change(open_queue, folder, [to_label, queued, conversations])
            to_label.select(pick_queued, queued, [picked, picked_turns, queued_ruling])
            save_ruling.click(save_queued_ruling, [picked, queued_ruling], ruling_status)
            conversations.select(show_conversation, folder, thread)
        with gr.Tab("Cases"):
            cases_folder = folder_picker(
                case_lists, f"Cases folder (`extortion-guard cases`, under {settings.batch_root})", "Refresh cases"
            )
            case_table = gr.Dataframe(
                headers=CASE_COLUMNS,
                type="array",
                interactive=False,
                label="Cases, largest total demanded first: click one",
                elem_id="case-list",
            )
            case_file = gr.HTML(elem_id="case-file")
            cases_folder.change(open_cases, cases_folder, case_table)
            case_table.select(show_case, cases_folder, case_file)
    return app
