"""Model versions: promote a retrained model when it is no worse, roll back to the one before.

The registry is a folder (``models/`` by default, or ``$EXTORTION_GUARD_MODELS``):

    models/
      registry.json        {"current": VERSION, "history": [every promotion and rollback]}
      VERSION/             a model folder with train_metrics.json, comparison.json, manifest.json, lineage.json

With no registry, or no promotion yet, the current model is the shipped ``model/default``.
The app and the batch job load :func:`model.registry.current_model_dir` whenever no model is named.
Changes to ``registry.json`` are written to a temporary file and renamed, under a lock.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock

from model.files import write_text_atomically
from model.registry import DEFAULT_MODEL_DIR, read_registry, registry_root

MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "README.md",
    "train_config.json",
    "train_metrics.json",
    "comparison.json",
    "comparison.md",
    "manifest.json",
    "first_stage.safetensors",  # the cascade's first stage, when one was fitted for these weights
    "first_stage.json",
    "first_stage_comparison.md",
)


@dataclass
class Tolerances:
    """How much worse a candidate may be and still be promoted."""

    test_macro_f1_drop: float = 0.005
    """Largest fall in macro-F1 on the frozen test split (0.005 = half a point)."""

    challenge_macro_f1_drop: float = 0.01
    """Largest fall in macro-F1 on any challenge or independent evaluation set (one point)."""

    real_review_fp_rise: float = 0.0
    """Largest rise in the extortion rate on held-out real reviews (none)."""

    significance: float = 0.05
    """Where the comparison holds paired evidence (both models' predictions on the same items), a change beyond its
    tolerance fails only if it is also significant at this level: in a paired bootstrap the candidate is not worse in
    fewer than this share of resamples, or the exact McNemar test of the lines only one model flags gives p below it.
    A change within noise passes, and the decision is the same every time for the same comparison."""


def _locked(root: Path) -> FileLock:
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(root / ".lock")


def _write_registry(root: Path, registry: dict) -> None:
    write_text_atomically(root / "registry.json", json.dumps(registry, indent=1, ensure_ascii=False) + "\n")


def check_promotion(comparison: dict, tolerances: Tolerances) -> list[dict]:
    """Each check of a comparison against the tolerances: name, parent, candidate, change, allowed, passed."""
    checks = []
    paired = comparison.get("paired", {})

    def check(name: str, parent, candidate, allowed: float, higher_is_better: bool = True):
        if parent is None or candidate is None:
            checks.append({"name": name, "parent": parent, "candidate": candidate, "passed": True, "note": "not measured"})
            return
        change = candidate - parent
        beyond = change < -allowed if higher_is_better else change > allowed
        row = {"name": name, "parent": parent, "candidate": candidate, "change": round(change, 6), "allowed": allowed}
        row |= {"passed": not beyond} | _significance(paired.get(name), beyond, tolerances.significance)
        checks.append(row)

    parent, candidate = comparison["parent"], comparison["candidate"]
    check("test macro-F1", parent.get("test_macro_f1"), candidate.get("test_macro_f1"), tolerances.test_macro_f1_drop)
    for name, value in candidate.get("challenge_macro_f1", {}).items():
        if name == comparison.get("new_labels_set"):
            continue  # the new labels are what the candidate learned from; they are reported, not a gate
        check(f"challenge {name} macro-F1", parent.get("challenge_macro_f1", {}).get(name), value, tolerances.challenge_macro_f1_drop)
    for name, value in candidate.get("eval_macro_f1", {}).items():
        check(f"evaluation set {name} macro-F1", parent.get("eval_macro_f1", {}).get(name), value, tolerances.challenge_macro_f1_drop)
    check(
        "extortion rate on real reviews",
        parent.get("real_review_extortion_rate"),
        candidate.get("real_review_extortion_rate"),
        tolerances.real_review_fp_rise,
        higher_is_better=False,
    )
    return checks


def _significance(evidence: dict | None, beyond: bool, significance: float) -> dict:
    """With paired evidence, whether a change beyond its tolerance is also beyond noise; the interval or p-value shown."""
    if not evidence:
        return {}
    significant = evidence["p_value"] < significance
    shown = {"p_value": evidence["p_value"]}
    if "interval" in evidence:
        shown["interval"] = evidence["interval"]
    else:
        shown["flagged_only_by"] = [evidence["only_parent"], evidence["only_candidate"]]
    note = "beyond tolerance and significant" if beyond and significant else "beyond tolerance, within noise" if beyond else ""
    return {"passed": not (beyond and significant), **shown, **({"note": note} if note else {})}


def promote(run: Path, tolerances: Tolerances, force_reason: str | None = None, root: Path | None = None) -> dict:
    """Copy a retrained run into the registry and make it current, if it passes the checks (or is forced with a reason)."""
    root = root or registry_root()
    comparison_file = run / "comparison.json"
    if not comparison_file.exists():
        raise ValueError(f"{run}: no comparison.json; promote a folder written by `extortion-guard retrain`")
    comparison = json.loads(comparison_file.read_text(encoding="utf-8"))
    checks = check_promotion(comparison, tolerances)
    failed = [c["name"] for c in checks if not c["passed"]]
    if failed and not force_reason:
        raise PromotionRefused(
            f"{run.name} regresses beyond the tolerances on: {', '.join(failed)} (see {comparison_file}); "
            "use --force --reason TEXT to promote anyway"
        )
    with _locked(root):
        registry = read_registry(root)
        version = run.name
        if (root / version).exists():
            raise ValueError(f"version {version} is already in {root}; retrain into a new folder name")
        staging = root / f".{version}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name in MODEL_FILES:
            if (run / name).exists():
                shutil.copy2(run / name, staging / name)
        if (run / "eval").is_dir():
            shutil.copytree(run / "eval", staging / "eval")
        entry = {
            "action": "promote",
            "version": version,
            "previous": registry["current"] or _default_version(),
            "previous_is_default": registry["current"] is None,
            "at": _now(),
            "forced": bool(failed),
            "reason": force_reason if failed else None,
            "checks": checks,
            "parent": comparison.get("parent_version"),
        }
        (staging / "lineage.json").write_text(json.dumps(entry, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(staging, root / version)
        registry["current"] = version
        registry["history"].append(entry)
        _write_registry(root, registry)
    return entry


def rollback(root: Path | None = None) -> dict:
    """Make the model that was current before the latest promotion current again."""
    root = root or registry_root()
    with _locked(root):
        registry = read_registry(root)
        if not registry["current"]:
            raise ValueError("nothing to roll back: the shipped default model is current")
        promotions = [e for e in registry["history"] if e["action"] == "promote" and e["version"] == registry["current"]]
        previous = promotions[-1]["previous"]
        # By the flag, not the name: a promoted folder may carry the shipped default's version as its name.
        to_default = promotions[-1].get("previous_is_default", not (root / previous).is_dir())
        entry = {"action": "rollback", "version": previous, "previous": registry["current"], "at": _now()}
        registry["current"] = None if to_default else previous
        registry["history"].append(entry)
        _write_registry(root, registry)
    return entry


def list_models(root: Path | None = None) -> list[dict]:
    """Every version in the registry, and the shipped default, with its test macro-F1 and parent."""
    root = root or registry_root()
    registry = read_registry(root)
    rows = [
        {
            "version": _default_version(),
            "path": str(DEFAULT_MODEL_DIR),
            "current": registry["current"] is None,
            "test_macro_f1": _test_f1(DEFAULT_MODEL_DIR),
            "parent": None,
            "promoted_at": None,
        }
    ]
    for entry in registry["history"]:
        if entry["action"] == "promote":
            folder = root / entry["version"]
            rows.append(
                {
                    "version": entry["version"],
                    "path": str(folder),
                    "current": registry["current"] == entry["version"],
                    "test_macro_f1": _test_f1(folder),
                    "parent": entry.get("parent"),
                    "promoted_at": entry["at"],
                    "forced": entry.get("forced", False),
                }
            )
    return rows


class PromotionRefused(ValueError):
    """The candidate regresses beyond the tolerances and was not forced."""


def _test_f1(folder: Path):
    metrics = folder / "train_metrics.json"
    if not metrics.exists():
        return None
    return json.loads(metrics.read_text(encoding="utf-8")).get("test", {}).get("macro_f1")


def _default_version() -> str:
    config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text(encoding="utf-8"))
    return config.get("extortion_guard_version") or "default"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
