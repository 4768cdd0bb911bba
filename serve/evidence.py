"""Why the model decided: the words that drove the extortion score, and what the message demands.

Word scores are occlusion: the message is segmented with jieba, and a word's score is
how much the extortion log-odds, log(p_extortion / (1 - p_extortion)), fall when it is
removed. Log-odds rather than the probability, because a model that is sure (0.9999) barely
moves its probability when one word goes, and the evidence would go blank exactly where it
matters; 1 - p is summed from the other labels' probabilities, so it stays exact there. Scoring every word costs
one model input per word, each as long as the message, so messages of more than 8
words are scored coarse to fine: first runs of a few adjacent words are removed
together (one model call), then the two runs whose removal lowered the probability
most (by at least 0.02) are scored word by word (a second call). The words of the other
runs share their run's score, and a message the model does not take for extortion
needs only the first call. The demand details (amounts and identifiers, :mod:`serve.demands`;
payment channel and threat type) are read off the prepared text, where disguises such as zfb
or 查评 are already resolved, so a moderator sees them in plain words; identifiers are masked.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import jieba
import numpy as np

from model.data_format import Message
from model.labels import LABELS
from model.text import prepare_text

from .demands import demanded_amounts, identifiers

MAX_WORDS = 48  # longer messages score their first 48 content words; the rest get 0
WORD_BY_WORD = 8  # messages with at most this many content words are scored word by word at once
REFINED_RUNS = 2  # at most this many runs are scored word by word ...
REFINE_MIN_DROP = 0.1  # ... and only those whose removal lowered the extortion log-odds by this much
EXTORTION = LABELS.index("extortion")
CHANNELS = {
    "支付宝": ("支付宝", "alipay"),
    "微信": ("微信", "wechat", "weixin"),
    "红包": ("红包",),
    "银行卡": ("银行卡", "卡号", "银行账户", "对公账户"),
    "收款码": ("收款码", "二维码", "付款码"),
    "QQ": ("qq",),
    "转账": ("转账", "打款", "汇款", "转给我", "转过来"),
}
THREATS = {
    "bad reviews": ("差评", "中评", "一星", "追评", "评价", "评分", "删评"),
    "complaints": ("投诉", "举报", "12315", "315", "工商", "市场监管", "消协", "平台介入"),
    "exposure": ("曝光", "微博", "抖音", "小红书", "朋友圈", "媒体", "记者", "发帖", "网上", "直播"),
    "recruiting others": ("找人", "兄弟们", "朋友们", "一起", "更多的人", "群里", "水军", "叫人", "组团"),
}
_CONTENT = re.compile(r"[\w\u4e00-\u9fff]")


@dataclass
class Evidence:
    """Word scores (in message order) and the demand details found; identifiers masked."""

    words: list[tuple[str, float]] = field(default_factory=list)
    amounts: list[float] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    threats: list[str] = field(default_factory=list)
    identifiers: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        out = asdict(self)
        out["words"] = [{"word": w, "score": round(s, 4)} for w, s in self.words]
        return out


def _extortion_without(classifier, message: Message, words: list[str], removals: list[list[int]]) -> list[float]:
    """The extortion log-odds of the message with each set of word positions removed, in one model call."""
    variants = []
    for removed in map(set, removals):
        reduced = "".join(w for i, w in enumerate(words) if i not in removed).strip() or "。"  # an emptied message still needs a token
        variants.append(Message(reduced, message.context, role=message.role))
    probs = np.asarray(classifier.predict_proba(variants), dtype=np.float64).clip(1e-12, None)
    others = np.delete(probs, EXTORTION, axis=1).sum(axis=1)  # not 1 - p, which rounds to 0 when the model is sure
    return [float(v) for v in np.log(probs[:, EXTORTION]) - np.log(others)]


def word_scores(classifier, message: Message) -> list[tuple[str, float]]:
    """Each jieba word of the message with the fall in extortion log-odds when it is removed (coarse to fine, see above)."""
    words = list(jieba.cut(message.text))
    content = [i for i, w in enumerate(words) if _CONTENT.search(w)][:MAX_WORDS]
    if len(content) <= WORD_BY_WORD:
        runs = [[i] for i in content]
    else:  # runs of about sqrt(n / REFINED_RUNS) words minimise the inputs: n / size runs plus REFINED_RUNS * size words
        size = max(2, round((len(content) / REFINED_RUNS) ** 0.5))
        runs = [content[start : start + size] for start in range(0, len(content), size)]
    whole, *without_run = _extortion_without(classifier, message, words, [[], *runs])
    run_drops = [whole - p for p in without_run]
    scores = {i: drop / len(run) for run, drop in zip(runs, run_drops, strict=True) for i in run}
    ranked = sorted(range(len(runs)), key=lambda r: run_drops[r], reverse=True)
    refined = [i for r in ranked[:REFINED_RUNS] if len(runs[r]) > 1 and run_drops[r] >= REFINE_MIN_DROP for i in runs[r]]
    if refined:
        scores.update(
            zip(refined, (whole - p for p in _extortion_without(classifier, message, words, [[i] for i in refined])), strict=True)
        )
    return [(w, scores.get(i, 0.0)) for i, w in enumerate(words)]


def _present(text: str, table: dict[str, tuple[str, ...]]) -> list[str]:
    lowered = text.lower()
    return [name for name, words in table.items() if any(w in lowered for w in words)]


def explain(classifier, message: Message) -> Evidence:
    """Word scores and the amounts, identifiers (masked), payment channel and threat type of one message."""
    prepared = prepare_text(message.text)
    ids = [{"kind": i.kind, "masked": i.masked()} for i in identifiers(message.text)]
    details = (demanded_amounts(message.text), _present(prepared, CHANNELS), _present(prepared, THREATS), ids)
    return Evidence(word_scores(classifier, message), *details)
