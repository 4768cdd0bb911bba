"""Text preparation throughput on one core, printed as a table.

    python bench/prepare_throughput.py [--messages 50000]

Runs ``model.text.prepare_text`` over the corpus texts (plain) and over the same
texts disguised by every evasion family, after a warm-up that builds the lookup
tables once.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import time

from model.data_format import read_messages
from model.text import prepare_text
from training.perturb import FAMILIES


def rate(texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        prepare_text(text)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["data/annotations/messages"])
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    texts = [m.text for m in read_messages(args.data)]
    plain = list(itertools.islice(itertools.cycle(texts), args.messages))
    rng = random.Random(0)
    disguised = [d for t in plain[: args.messages // 10] for f in FAMILIES.values() if (d := f(t, rng))][: args.messages]
    started = time.perf_counter()
    prepare_text("预热 cp hb 查评")  # builds the lexicon, OpenCC and (through the homophone 查评) jieba tables
    warm_up = time.perf_counter() - started

    print(f"one core; first call (table building) {warm_up:.2f} s; mean length {sum(map(len, plain)) / len(plain):.1f} characters")
    print()
    print("| input | messages | messages/s |")
    print("|---|---|---|")
    print(f"| corpus texts | {len(plain)} | {rate(plain):,.0f} |")
    print(f"| corpus texts disguised by the evasion families | {len(disguised)} | {rate(disguised):,.0f} |")


if __name__ == "__main__":
    main()
