"""Why the model decided: the words that drove the extortion score, and what the message demands.

Word scores are occlusion: the message is segmented with jieba, each word is removed
in turn, and its score is how much the extortion probability falls without it (all
variants go through the model in one call). The demand details (amount, payment
channel, threat type) are read off the prepared text, where disguises such as zfb or
查评 are already resolved, so a moderator sees them in plain words.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import jieba

from model.data_format import Message
from model.labels import LABELS
from model.text import prepare_text

MAX_WORDS = 48  # longer messages score their first 48 content words; the rest get 0
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
_AMOUNT = re.compile(r"(?:[¥$]\s*)?(\d+(?:\.\d+)?)\s*(万|千|k|w|百)?\s*(元|块钱|块|rmb|刀)?", re.IGNORECASE)
_SCALE = {"万": 10_000, "w": 10_000, "千": 1_000, "k": 1_000, "百": 100}
_CONTENT = re.compile(r"[\w\u4e00-\u9fff]")


@dataclass
class Evidence:
    """Word scores (in message order) and the demand details found."""

    words: list[tuple[str, float]] = field(default_factory=list)
    amounts: list[float] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    threats: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        out = asdict(self)
        out["words"] = [{"word": w, "score": round(s, 4)} for w, s in self.words]
        return out


def word_scores(classifier, message: Message) -> list[tuple[str, float]]:
    """Each jieba word of the message with the fall in extortion probability when it is removed."""
    words = list(jieba.cut(message.text))
    content = [i for i, w in enumerate(words) if _CONTENT.search(w)][:MAX_WORDS]
    variants = [message]
    for i in content:
        reduced = "".join(words[:i] + words[i + 1 :]).strip() or "。"  # an emptied message still needs a token
        variants.append(Message(reduced, message.context))
    probs = classifier.predict_proba(variants)[:, EXTORTION]
    scores = dict(zip(content, (float(probs[0] - p) for p in probs[1:])))
    return [(w, scores.get(i, 0.0)) for i, w in enumerate(words)]


def amounts(text: str) -> list[float]:
    """Sums of money asked for: digits with a unit (元, 块, 万, k …) or a currency sign, Chinese numerals included."""
    import cn2an

    try:
        text = cn2an.transform(text, "cn2an")  # 两千块 -> 2000块
    except (ValueError, KeyError, IndexError):  # cn2an rejects some odd numeral strings; keep the text as it is
        pass
    found = []
    for match in _AMOUNT.finditer(text):
        number, scale, unit = match.groups()
        has_sign = match.group(0).lstrip()[:1] in "¥$"
        if not (scale or unit or has_sign):
            continue  # a bare number is an order id or a count, not a demand
        found.append(float(number) * _SCALE.get((scale or "").lower(), 1))
    return found


def _present(text: str, table: dict[str, tuple[str, ...]]) -> list[str]:
    lowered = text.lower()
    return [name for name, words in table.items() if any(w in lowered for w in words)]


def explain(classifier, message: Message) -> Evidence:
    """Word scores and the amount, payment channel and threat type of one message."""
    prepared = prepare_text(message.text)
    return Evidence(word_scores(classifier, message), amounts(prepared), _present(prepared, CHANNELS), _present(prepared, THREATS))
