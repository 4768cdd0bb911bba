"""Prediction throughput of a model on this machine, printed as a table.

    python bench/predict_throughput.py [--model DIR] [--messages 2000] [--threads 2]

Messages are the labelled set's texts with their context, repeated to the asked
number. Compares ``ExtortionClassifier.predict`` (length-sorted batches) with
``transformers.pipeline("text-classification")`` on its defaults, and reports
the compute reached against the model's FLOPs per token.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from model.classifier import DEFAULT_MODEL_DIR, ExtortionClassifier
from model.data_format import read_messages
from model.inputs import encode_messages


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--data", nargs="+", default=["data/annotations/messages"])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--pipeline-messages", type=int, default=300, help="the pipeline is slow; time it on fewer")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    classifier = ExtortionClassifier.from_pretrained(args.model, device="cpu")
    messages = list(itertools.islice(itertools.cycle(read_messages(args.data)), args.messages))
    encoded = encode_messages(classifier.tokenizer, messages, classifier.max_length, classifier.text_preparation, classifier.role_marker)
    tokens = sum(len(ids) for ids in encoded.input_ids)
    config = classifier.model.config
    # Per token: 2 FLOPs per weight in the encoder's matrices, plus attention scores over the mean length.
    weights = config.num_hidden_layers * (4 * config.hidden_size**2 + 2 * config.hidden_size * config.intermediate_size)
    flops_per_token = 2 * weights + 4 * config.num_hidden_layers * config.hidden_size * tokens / len(messages)

    classifier.predict(messages[:64])  # warm-up
    rows = []
    for batch_size in (32, 64, 128):
        seconds = timed(lambda size=batch_size: classifier.predict(messages, batch_size=size))
        rows.append((f"ExtortionClassifier.predict, batch {batch_size}, fp32", len(messages), tokens, seconds))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        seconds = timed(lambda: classifier.predict(messages, batch_size=64))
    rows.append(("ExtortionClassifier.predict, batch 64, bf16 autocast", len(messages), tokens, seconds))

    from transformers import pipeline

    texts = [m.text for m in messages[: args.pipeline_messages]]
    default_pipeline = pipeline("text-classification", model=args.model, device="cpu")
    seconds = timed(lambda: default_pipeline(texts))
    pipeline_tokens = sum(len(ids) for ids in classifier.tokenizer(texts)["input_ids"])
    rows.append(("transformers pipeline, defaults (message only)", len(texts), pipeline_tokens, seconds))

    print(
        f"model {args.model}: {tokens / len(messages):.1f} tokens per message on average, "
        f"{flops_per_token / 1e6:.0f} MFLOP per token, {args.threads} threads"
    )
    print()
    print("| path | messages | seconds | messages/s | GFLOP/s |")
    print("|---|---|---|---|---|")
    for name, n, n_tokens, seconds in rows:
        print(f"| {name} | {n} | {seconds:.2f} | {n / seconds:.0f} | {n_tokens * flops_per_token / seconds / 1e9:.0f} |")


if __name__ == "__main__":
    main()
