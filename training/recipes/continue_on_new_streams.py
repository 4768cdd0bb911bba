"""Continue training a shipped model on new corpus streams, beside a replayed sample of the rest.

A from-scratch run on every stream (eg-small-v8i) re-learnt the extortion line and lost keyword-free demands; this
recipe keeps the parent's weights and shows it only the new streams (``--repeats`` times each) and a seeded sample of
the old training messages, the same narrowing that ``extortion-guard retrain`` applies to moderators' labels.

    python training/recipes/continue_on_new_streams.py --parent model/default \
        --new data/annotations/messages/tw2[3-9].jsonl --out runs/eg-small-v8k
"""

import argparse
import dataclasses
import json
from pathlib import Path

from model.data_format import read_messages
from training.data import corpus_for
from training.retrain import compare, focus_on_new_labels
from training.trainer import train
from training.training_args import RetrainSettings, TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", default="model/default", help="the model to continue from and compare with")
    parser.add_argument("--new", nargs="+", required=True, help="the new streams (JSON Lines)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=2, help="times each new training message is shown")
    parser.add_argument("--replay", type=int, default=8000, help="old training messages replayed beside them")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--tune-extortion-shift", default="tuning-macro-f1")
    args = parser.parse_args()

    parent = Path(args.parent)
    parent_config = json.loads((parent / "train_config.json").read_text(encoding="utf-8"))
    config = TrainConfig(**parent_config)
    config = dataclasses.replace(
        config,
        data=[*config.data, *(p for p in args.new if p not in config.data)],
        base=str(parent),
        out=args.out,
        learning_rate=args.learning_rate,
        tune_extortion_shift=args.tune_extortion_shift,
        card_notes="training/recipes/eg-small-v7.md",
    )
    corpus = corpus_for(config)
    new_ids = {m.id for m in read_messages(args.new, require_label=True)}
    settings = RetrainSettings(new_label_repeats=args.repeats, replay=args.replay)
    focus_on_new_labels(corpus, new_ids & {m.id for m in corpus.train}, settings, config.seed)
    summary = train(config, corpus)
    comparison = compare(summary, parent, corpus, config, extra={"started_from": str(parent), "focus": corpus.focus})
    failed = [c["name"] for c in comparison["checks"] if not c["passed"]]
    print("gate:", "passes" if not failed else f"fails {failed}")


if __name__ == "__main__":
    main()
