"""Peak memory of ``extortion-guard batch`` as the input grows, printed as a table.

    python bench/batch_memory.py [--sizes 10000 100000 1000000] [--model DIR | --tiny]

Each size is a generated chat log (conversations of 2 to 12 turns, interleaved,
texts from the labelled set) scored in a fresh process; the table gives that
process's peak resident memory (its own, plus its largest worker's) and its speed.
``--tiny`` scores with a small random model, which measures the engine's own memory
(reading, context, parts, roll-ups) at sizes the real model would take hours over on a CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from model.data_format import read_messages

CHILD = """
import json, resource, sys
from serve.batch import BatchConfig, run_local
summary = run_local(BatchConfig([sys.argv[1]], sys.argv[2], model=sys.argv[3] if sys.argv[3] != "-" else None,
                                precision=sys.argv[4], device="cpu", quiet=True))
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"peak_mib": peak_kib / 1024, "seconds": summary["seconds"], "rate": summary["messages_per_second"],
                  "rows": summary["rows_in"]}))
"""


def write_log(path: Path, size: int, texts: list[str], seed: int = 0) -> None:
    rng = random.Random(seed)
    open_conversations: list[list] = []
    next_id = 0
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(size):
            if len(open_conversations) < 50 or rng.random() < 0.2:
                open_conversations.append([f"c{next_id}", rng.randint(2, 12), f"shop{rng.randrange(5000)}", f"u{rng.randrange(200_000)}"])
                next_id += 1
            index = rng.randrange(len(open_conversations))
            conversation = open_conversations[index]
            role = rng.choice(["buyer", "seller"])
            record = {
                "message_id": f"m{i}",
                "conversation_id": conversation[0],
                "sender_id": conversation[3] if role == "buyer" else conversation[2],
                "sender_role": role,
                "shop_id": conversation[2],
                "ts": 1_764_000_000 + i,
                "text": rng.choice(texts),
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            conversation[1] -= 1
            if conversation[1] == 0:  # swap with the last and pop: list.remove would make 1M rows take an hour
                open_conversations[index] = open_conversations[-1]
                open_conversations.pop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--tiny", action="store_true", help="a small random model: the engine's own memory")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="eg-memory-"))
    model = args.model or "-"
    if args.tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny model builder
        from tests.conftest import save_tiny_model

        model = str(work / "tiny")
        save_tiny_model(model, max_length=160)
    texts = [m.text for m in read_messages(["data/annotations/messages"])]
    rows = []
    for size in args.sizes:
        log = work / f"log-{size}.jsonl"
        write_log(log, size, texts)
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(log), str(work / f"out-{size}"), model, args.precision],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append((size, json.loads(result.stdout.strip().splitlines()[-1])))
        log.unlink()
    print(f"model: {'tiny random (engine memory)' if args.tiny else args.model or 'shipped default'}, precision {args.precision}")
    print()
    print("| messages | peak memory (MiB) | seconds | messages/s |")
    print("|---|---|---|---|")
    for size, r in rows:
        print(f"| {size:,} | {r['peak_mib']:.0f} | {r['seconds']:.0f} | {r['rate']:.0f} |")


if __name__ == "__main__":
    main()
