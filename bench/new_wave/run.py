"""The new-wave drill: a scam absent from the corpus, learnt in one retrain from the moderators' labels.

    python bench/new_wave/run.py [--budget 100] [--out runs/new-wave] [-- RETRAIN FLAGS]
    python bench/new_wave/run.py --sweep-repeats 1,8,16      # choose --new-label-repeats first

The wave (``data/README.md``): a ring's buyers set a question waiting for their answer on the product page (答题)
beside an item in their cart for the seller to pay (清车), and say nothing more. The steps, each through the real
command line:

1. ``batch``: score the day's pool (the wave, its honest look-alikes and ordinary chat; 675 messages).
2. ``queue``: order the pool for labelling by value; a seeded random order is the baseline.
3. labels: the moderators' rulings are read from the pool's files (the first 300 messages of the pool: the wave
   and look-alikes), written as inbox lines with the queue's reason.
4. ``retrain`` on the 300 labels, compared with the parent on every usual set plus the held-out wave and its
   look-alikes (``heldout-*``, 375 messages by three other writers), then ``models promote`` into a
   registry of its own under ``--out`` (the real one is not touched).
5. The same budget picked by value and at random: ``retrain`` on each (evaluation cut to 150 messages a set:
   these runs only measure the held-out wave).

Prints a Markdown table: recall on the held-out wave, precision of the extortion verdicts over the held-out wave
and its look-alikes, whether the gate passes, and minutes. The parent's scores are cached
(``~/.cache/extortion-guard``), so a second run of the drill scores only the candidates.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from model.labels import LABELS

HERE = Path(__file__).parent
DATA = HERE / "data"
POOL_FILES = ("pool-wave.jsonl", "pool-lookalike-jargon.jsonl", "pool-lookalike.jsonl", "pool-background.jsonl")
INBOX_SIZE = 300  # the first 300 of the pool: the wave (150), its jargon look-alikes (75), 75 other look-alikes
HELD_OUT = ("heldout-wave", "heldout-lookalike-jargon", "heldout-lookalike")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cli(*args: str, env: dict | None = None) -> float:
    """Run ``extortion-guard ARGS``; return its minutes."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "serve.cli", *args], check=True, env={**os.environ, **(env or {})})
    return (time.perf_counter() - started) / 60


def write_inbox(messages: list[dict], reasons: dict[str, str], path: Path) -> None:
    """The moderators' rulings: each message with its label from the file, as an inbox line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for n, m in enumerate(messages):
            record = {k: m[k] for k in ("id", "text", "context", "role", "label")} | {
                "source": "moderator",
                "moderator": "drill",
                "decided_at": f"2026-12-01T{8 + n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}+00:00",
            }
            if m["id"] in reasons:
                record["queue_reason"] = reasons[m["id"]]
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def wave_figures(eval_dir: Path) -> dict:
    """Recall on the held-out wave; precision of extortion verdicts over the wave and its look-alikes."""
    said = {name: pq.read_table(eval_dir / f"challenge-{name}" / "predictions.parquet").to_pylist() for name in HELD_OUT}
    lookalikes = [r for name in HELD_OUT[1:] for r in said[name]]
    extortion = LABELS.index("extortion")  # predictions.parquet keeps label indices
    caught = sum(r["predicted"] == extortion for r in said["heldout-wave"])
    false_flags = sum(r["predicted"] == extortion for r in lookalikes)
    return {
        "recall": caught / len(said["heldout-wave"]),
        "precision": caught / (caught + false_flags) if caught + false_flags else float("nan"),
        "false_flags": false_flags,
        "lookalikes": len(lookalikes),
    }


def retrain(inbox: Path, out: Path, registry: Path, *extra: str) -> float:
    challenge = ["data/annotations/challenge", *(str(DATA / f"{name}.jsonl") for name in HELD_OUT)]
    return cli(
        "retrain", "--inbox", str(inbox), "--out", str(out), "--held-out-share", "0", "--challenge", *challenge, *extra,
        env={"EXTORTION_GUARD_MODELS": str(registry)},
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/new-wave", help="working folder (scored pool, inboxes, runs, registry)")
    parser.add_argument("--budget", type=int, default=100, help="labels picked by value and at random for the comparison")
    parser.add_argument("--skip-comparison", action="store_true", help="only the 300-label retrain and promotion")
    parser.add_argument(
        "--sweep-repeats",
        default=None,
        help="instead of the drill, retrain on the 300 labels once per value given (e.g. 1,8,16 for --new-label-repeats), "
        "each evaluated on 150 messages a set, to choose the setting",
    )
    parser.add_argument("retrain_args", nargs="*", help="passed to every retrain after --, e.g. -- --replay 4000")
    args = parser.parse_args()
    out, registry = Path(args.out), Path(args.out) / "registry"
    pool = [m for name in POOL_FILES for m in read(DATA / name)]
    rows = [{"message_id": m["id"], "text": m["text"], "context": m["context"], "sender_role": m["role"]} for m in pool]
    (out / "pool").mkdir(parents=True, exist_ok=True)
    (out / "pool" / "pool.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    if args.sweep_repeats:
        sweep(out, pool, [int(r) for r in args.sweep_repeats.split(",")], args.retrain_args)
        return
    minutes = {"batch": cli("batch", str(out / "pool" / "pool.jsonl"), "--output", str(out / "scored"), "--quiet", "--restart")}
    minutes["queue"] = cli("queue", str(out / "scored"), "--size", str(args.budget), "--out", str(out / "queue.jsonl"))
    write_inbox(pool[:INBOX_SIZE], {}, out / "inbox-300" / "labels.jsonl")
    minutes["retrain"] = retrain(out / "inbox-300", out / "run-300", registry, *args.retrain_args)
    promoted = subprocess.run(
        [sys.executable, "-m", "serve.cli", "models", "promote", str(out / "run-300")],
        env={**os.environ, "EXTORTION_GUARD_MODELS": str(registry)},
    ).returncode == 0  # fmt: skip
    rows_out = [("parent (shipped)", "–", wave_figures(out / "run-300" / "parent-eval"), "–", "–")]
    loop = sum(minutes.values())
    rows_out.append(("retrain on the 300 inbox labels", 300, wave_figures(out / "run-300" / "eval"), promoted, f"{loop:.1f}"))

    if not args.skip_comparison:
        by_id = {m["id"]: m for m in pool}
        queued = read(out / "queue.jsonl")
        at_random = random.Random(0).sample(pool, args.budget)
        for name, picked, reasons in (
            ("by value", [by_id[q["id"]] for q in queued], {q["id"]: q["queue_reason"] for q in queued}),
            ("at random", at_random, {m["id"]: "random" for m in at_random}),
        ):
            slug = name.replace(" ", "-")
            write_inbox(picked, reasons, out / f"inbox-{slug}" / "labels.jsonl")
            quick = ("--max-eval-samples", "150", *args.retrain_args)
            spent = retrain(out / f"inbox-{slug}", out / f"run-{slug}", out / f"registry-{slug}", *quick)
            wave_picked = sum(m["id"].startswith("wave-pa") for m in picked)
            label = f"{args.budget} labels {name} ({wave_picked} of the wave)"
            rows_out.append((label, args.budget, wave_figures(out / f"run-{slug}" / "eval"), "not asked", f"{spent:.1f}"))

    print_table(rows_out)
    print(f"\nminutes by step of the 300-label loop: {', '.join(f'{k} {v:.1f}' for k, v in minutes.items())}")


def sweep(out: Path, pool: list[dict], repeats: list[int], retrain_args: list[str]) -> None:
    """The 300-label retrain once per --new-label-repeats value, each with a quick evaluation."""
    write_inbox(pool[:INBOX_SIZE], {}, out / "inbox-300" / "labels.jsonl")
    rows_out = []
    for r in repeats:
        run = out / f"sweep-repeats-{r}"
        quick = ("--max-eval-samples", "150", "--new-label-repeats", str(r), *retrain_args)
        spent = retrain(out / "inbox-300", run, out / f"registry-sweep-{r}", *quick)
        if not rows_out:
            rows_out.append(("parent (shipped)", "–", wave_figures(run / "parent-eval"), "not asked", "–"))
        rows_out.append((f"300 labels, each x{r}", 300, wave_figures(run / "eval"), "not asked", f"{spent:.1f}"))
    print_table(rows_out)


def print_table(rows_out: list[tuple]) -> None:
    print("\n| model | labels | held-out wave recall | extortion precision (wave + look-alikes) | look-alikes flagged | promoted | min |")
    print("|---|---|---|---|---|---|---|")
    for name, labels, f, passed, spent in rows_out:
        promoted_text = passed if isinstance(passed, str) else ("yes" if passed else "**no**")
        print(
            f"| {name} | {labels} | {f['recall']:.3f} | {f['precision']:.3f} | {f['false_flags']} of {f['lookalikes']} | "
            f"{promoted_text} | {spent} |"
        )


if __name__ == "__main__":
    main()
