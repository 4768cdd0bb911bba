"""Pick how to run the model on this machine by measuring, not by flags: ``--precision auto``.

For a workload (``single``: one message per call, as a server sees; ``batch``: full batches, as
the batch job sees) each path that keeps the labels is timed on a few built-in messages, and the
fastest is used. The paths: eager PyTorch in fp32; eager PyTorch in bf16, only where the CPU (or
GPU) computes bf16 natively; ONNX Runtime in fp32 on a CPU, where it is installed. int8 is never
picked by ``auto``: it changes labels (it failed the promotion gate), so it stays an explicit choice.

A path whose labels differ from fp32 PyTorch's on the calibration messages is refused. The choice
is cached per machine (CPU model and features, library versions) and model, in
``~/.cache/extortion-guard/runtime.json``, so later starts do not measure again.
``extortion-guard doctor`` prints the paths, their times and the choice.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .classifier import ExtortionClassifier, native_bf16
from .data_format import Message, Turn
from .files import cache_root, write_text_atomically

WORKLOADS = ("single", "batch")
BATCH_SIZE = 32
# Written for calibration: ordinary chat, a complaint, threats with and without context, of the lengths chat has.
CALIBRATION_MESSAGES = (
    Message("在吗？这个什么时候发货"),
    Message("好的，谢谢亲"),
    Message("收到的杯子有一道裂纹，麻烦给我换一个新的，照片已经发你了"),
    Message("钱呢？", (Turn("buyer", "给我三百块，不然差评"), Turn("seller", "亲，这个我们做不到"))),
    Message("要么花钱消灾，要么等着更多的人来给你们店写差评，自己选吧"),
    Message("退款不给处理的话我就去平台投诉，东西确实是坏的"),
    Message("快递三天都没动了，能帮我催一下吗？着急用的，周末要送人"),
    Message("行，那就按你说的补发吧", (Turn("seller", "亲，我们给您补发一件可以吗"),)),
)


@dataclass
class RuntimePath:
    runtime: str  # "torch" or "onnx"
    precision: str  # "fp32" or "bf16"

    @property
    def name(self) -> str:
        return f"{self.runtime} {self.precision}"


@dataclass
class RuntimeChoice:
    workload: str
    path: RuntimePath
    reason: str
    milliseconds: dict[str, float] = field(default_factory=dict)  # per path name: per call (single) or per message (batch)
    refused: dict[str, str] = field(default_factory=dict)  # path name: why it was not considered


def candidate_paths(device: torch.device, bf16_native: bool, onnx_available: bool) -> tuple[list[RuntimePath], dict[str, str]]:
    """The paths worth timing on this device, and the others with the reason they are left out."""
    paths, refused = [RuntimePath("torch", "fp32")], {}
    if bf16_native:
        paths.append(RuntimePath("torch", "bf16"))
    else:
        refused["torch bf16"] = "no native bf16 on this device (emulated bf16 is slower than fp32)"
    if device.type != "cpu":
        refused["onnx fp32"] = "ONNX Runtime is used on the CPU only"
    elif not onnx_available:
        refused["onnx fp32"] = "onnxruntime is not installed"
    else:
        paths.append(RuntimePath("onnx", "fp32"))
    refused["int8"] = "changes labels; only on request (--precision int8)"
    return paths, refused


def use_path(classifier: ExtortionClassifier, path: RuntimePath) -> None:
    """Switch a classifier loaded in fp32 to ``path`` (the classifier exports its ONNX graph once and keeps it)."""
    classifier.precision = path.precision
    if path.runtime == "torch":
        classifier.onnx = None
    elif not classifier.use_onnx_runtime():
        raise ValueError("ONNX Runtime cannot run this classifier here")


def time_path(classifier: ExtortionClassifier, workload: str, budget_seconds: float) -> float:
    """Milliseconds per call of one message (``single``) or per message in full batches (``batch``), the median of repeats."""
    messages = list(CALIBRATION_MESSAGES)
    batch = (messages * (BATCH_SIZE // len(messages) + 1))[:BATCH_SIZE]
    batch = [Message(f"{m.text}{i}", m.context) for i, m in enumerate(batch)]  # distinct, so none is scored once for all
    run = (lambda: classifier.score([messages[2]], 1)) if workload == "single" else (lambda: classifier.score(batch, BATCH_SIZE))
    run()  # warm-up: first calls allocate
    times, deadline = [], time.perf_counter() + budget_seconds
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 50):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    per = 1 if workload == "single" else BATCH_SIZE
    return 1000 * float(np.median(times)) / per


def machine_key(classifier: ExtortionClassifier, workload: str) -> str:
    """What the measurement depends on: this CPU and its features, the libraries, the model's weights, the workload."""
    import transformers

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    cpu = platform.processor() or platform.machine()
    flags = cpu_flags()
    # The weights by their files' sizes and times: a model retrained into the same folder is measured again.
    folder = Path(str(getattr(classifier.model, "name_or_path", "")))
    weights = (
        [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(folder.glob("*.safetensors"))] if folder.is_dir() else []
    )
    parts = [
        cpu,
        " ".join(sorted(flags)),
        str(classifier.device),
        torch.__version__,
        transformers.__version__,
        str(ort),
        classifier.version,
        *weights,
        workload,
        str(torch.get_num_threads()),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def cpu_flags() -> set[str]:
    """The CPU features that decide which paths are fast (from /proc/cpuinfo; empty elsewhere)."""
    wanted = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8"}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return wanted & set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def choose_runtime(
    classifier: ExtortionClassifier,
    workload: str,
    cache: Path | None = None,
    budget_seconds: float = 2.0,
    measure=time_path,
    fresh: bool = False,
) -> RuntimeChoice:
    """Time each candidate path for ``workload`` (about ``budget_seconds`` in all), switch ``classifier`` to the fastest
    that keeps the labels, and return the choice. A cached choice for this machine and model is reused unless ``fresh``."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    from . import onnx_runtime

    paths, refused = candidate_paths(classifier.device, native_bf16(classifier.device), onnx_runtime.available())
    cache = cache or default_cache()
    key = machine_key(classifier, workload)
    stored = _read_cache(cache).get(key)
    if stored and not fresh and any(p.name == stored["path"] for p in paths):
        chosen = next(p for p in paths if p.name == stored["path"])
        use_path(classifier, chosen)
        return RuntimeChoice(
            workload, chosen, f"measured earlier on this machine ({stored['measured_at']})", stored["milliseconds"], refused
        )

    use_path(classifier, RuntimePath("torch", "fp32"))
    reference = classifier.score(list(CALIBRATION_MESSAGES), BATCH_SIZE)[0].argmax(axis=1)
    milliseconds = {}
    for path in paths:
        use_path(classifier, path)
        labels = classifier.score(list(CALIBRATION_MESSAGES), BATCH_SIZE)[0].argmax(axis=1)
        if not np.array_equal(labels, reference):
            refused[path.name] = "changed a calibration message's label"
            continue
        milliseconds[path.name] = round(measure(classifier, workload, budget_seconds / len(paths)), 3)
    best = min((p for p in paths if p.name in milliseconds), key=lambda p: milliseconds[p.name])
    use_path(classifier, best)
    runner_up = sorted(milliseconds.values())[1] if len(milliseconds) > 1 else None
    reason = "the only path" if runner_up is None else f"fastest: {milliseconds[best.name]:.2f} ms against {runner_up:.2f} ms for the next"
    _write_cache(cache, key, {"path": best.name, "milliseconds": milliseconds, "measured_at": time.strftime("%Y-%m-%d %H:%M")})
    return RuntimeChoice(workload, best, reason, milliseconds, refused)


def default_cache() -> Path:
    return cache_root() / "runtime.json"


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, key: str, value: dict) -> None:
    entries = _read_cache(path)
    entries[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(entries, indent=1))
