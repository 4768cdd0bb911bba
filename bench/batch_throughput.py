"""End-to-end throughput of ``extortion-guard batch`` against ``transformers.pipeline``, as a table.

    python bench/batch_throughput.py [--messages 20000] [--model DIR] [--threads 2]

The same messages (the labelled set's texts, repeated to the asked number, with no
context so that both sides see the same input) go through:
- ``transformers.pipeline("text-classification")`` with its default settings;
- the local batch engine, file in and files out, at each precision and worker count.
For each engine run it prints messages per second, the speed-up over the pipeline,
label agreement with the fp32 engine run, and seconds by stage (reading, tokenising,
model, writing, finishing). Then one run with conversation context for comparison.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from model.classifier import DEFAULT_MODEL_DIR, native_bf16
from model.data_format import read_messages
from serve.batch import BatchConfig, run_local


def write_chat_log(path: Path, messages, with_context: bool) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for i, message in enumerate(messages):
            record = {"message_id": f"m{i}", "text": message.text}
            if with_context:
                record["context"] = [{"role": t.role, "text": t.text} for t in message.context]
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def engine_run(log: Path, out: Path, model: str, precision: str, workers: int, context_turns: int) -> tuple[dict, list[str]]:
    config = BatchConfig(
        [str(log)], str(out), model=model, precision=precision, workers=workers, device="cpu", quiet=True, context_turns=context_turns
    )
    summary = run_local(config)
    return summary, pq.read_table(out / "predictions.parquet", columns=["label"]).column("label").to_pylist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--data", nargs="+", default=["data/annotations/messages"])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-pipeline", action="store_true", help="time only the engine")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    messages = list(itertools.islice(itertools.cycle(read_messages(args.data)), args.messages))
    work = Path(tempfile.mkdtemp(prefix="eg-bench-"))
    plain, with_context = work / "plain.jsonl", work / "context.jsonl"
    write_chat_log(plain, messages, with_context=False)
    write_chat_log(with_context, messages, with_context=True)

    rows = []
    pipeline_rate = None
    if not args.skip_pipeline:
        from transformers import pipeline

        classify = pipeline("text-classification", model=args.model, device="cpu")
        started = time.perf_counter()
        pipeline_labels = [r["label"] for r in classify([m.text for m in messages])]
        seconds = time.perf_counter() - started
        pipeline_rate = len(messages) / seconds
        rows.append(["transformers.pipeline, defaults", "fp32", 1, seconds, pipeline_rate, None, None, {}])

    precisions = ["fp32", "int8"] + (["bf16"] if native_bf16(torch.device("cpu")) else [])
    reference = None
    for precision, workers in [(p, w) for w in (1, 2) for p in precisions]:
        summary, labels = engine_run(plain, work / f"{precision}-{workers}", args.model, precision, workers, context_turns=0)
        reference = reference or labels
        agreement = sum(a == b for a, b in zip(labels, reference, strict=True)) / len(labels)
        if not args.skip_pipeline and precision == "fp32" and workers == 1:
            rows[0][6] = sum(a == b for a, b in zip(pipeline_labels, labels, strict=True)) / len(labels)
        rows.append(
            [
                f"batch engine, {workers} worker(s)",
                precision,
                workers,
                summary["seconds"],
                summary["messages_per_second"],
                None,
                agreement,
                summary["seconds_by_stage"],
            ]
        )
    best = max((r for r in rows if r[0].startswith("batch")), key=lambda r: r[4])
    summary, _ = engine_run(with_context, work / "context", args.model, best[1], best[2], context_turns=4)
    rows.append(
        [
            f"batch engine, {best[2]} worker(s), with context",
            best[1],
            best[2],
            summary["seconds"],
            summary["messages_per_second"],
            None,
            None,
            summary["seconds_by_stage"],
        ]
    )

    print(f"{len(messages):,} messages, {args.threads} threads, model {args.model}")
    print()
    print("| path | precision | seconds | messages/s | × pipeline | label agreement | seconds by stage |")
    print("|---|---|---|---|---|---|---|")
    for name, precision, _, seconds, rate, _, agreement, stages in rows:
        ratio = f"{rate / pipeline_rate:.1f}" if pipeline_rate else "–"
        agree = f"{agreement:.4f}" if agreement is not None else "–"
        stage_text = ", ".join(f"{k} {v:.0f}" for k, v in stages.items())
        print(f"| {name} | {precision} | {seconds:.1f} | {rate:.0f} | {ratio} | {agree} | {stage_text} |")
    print("\nlabel agreement: with the fp32 engine run (for the pipeline row: the pipeline's labels against it)")


if __name__ == "__main__":
    main()
