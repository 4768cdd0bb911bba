"""How much of a retrain's parent evaluation the score cache saves, printed as a table.

    python bench/retrain_parent_cache.py [--model DIR]

Runs what ``extortion-guard retrain`` runs for the parent (``evaluate_run``: dev, test with
robustness, challenge sets, held-out real text) twice, against an empty score cache in a
temporary folder and then against the cache the first run filled.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from model.classifier import DEFAULT_MODEL_DIR, ExtortionClassifier
from training.data import corpus_for
from training.score_cache import CachedScores
from training.trainer import evaluate_run
from training.training_args import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    args = parser.parse_args()
    config = TrainConfig()
    corpus = corpus_for(config)
    root = Path(tempfile.mkdtemp(prefix="eg-score-cache-"))
    rows = []
    for run in ("empty cache", "filled cache"):
        started = time.perf_counter()
        parent = CachedScores(ExtortionClassifier.from_pretrained(args.model, device="cpu"), args.model, root=root)
        results = evaluate_run(parent, corpus, config, root / run.replace(" ", "-"))
        parent.save()
        rows.append((run, time.perf_counter() - started, parent.misses, parent.hits, results["test"]["macro_f1"]))
    print("| parent evaluation | seconds | messages scored | reused from cache | test macro-F1 |")
    print("|---|---|---|---|---|")
    for run, seconds, scored, reused, f1 in rows:
        print(f"| {run} | {seconds:.1f} | {scored:,} | {reused:,} | {f1:.4f} |")


if __name__ == "__main__":
    main()
