"""Evasion perturbations: the disguises of the evasion families, for augmentation and robustness tests.

Each family rewrites the words that matter (差评, 红包, 转账, 钱 …) the way people
dodge keyword filters; families that need such a word fall back to any pair of
Chinese characters, and return None when nothing in the text can be disguised.
Text preparation (:mod:`model.text`) undoes most families; look-alike and
shuffled characters it cannot, so the model learns those from augmentation.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable

from model.data_format import Message
from model.text import LEXICON, homophone_table, syllables

# In a fixed order (longest first, then by code point): augmentation's random choices
# must not depend on the hash seed of the process.
TARGET_WORDS = tuple(sorted(set(LEXICON) | {"钱", "删", "评价", "店铺"}, key=lambda w: (-len(w), w)))
MULTI_CHARACTER_WORDS = tuple(w for w in TARGET_WORDS if len(w) >= 2)
LOOKALIKES = {
    "评": "坪抨泙",
    "差": "羞荖",
    "钱": "钳线",
    "红": "缸虹",
    "包": "句抱",
    "转": "砖传",
    "账": "帐胀",
    "款": "歀欵",
    "退": "褪腿",
    "投": "设殳",
    "诉": "拆折",
    "举": "拳挙",
    "报": "扳极",
    "曝": "瀑",
    "删": "刪珊",
    "好": "妤",
    "a": "аα",
    "c": "сϲ",
    "e": "е",
    "o": "оο",
    "p": "рρ",
    "x": "х",
    "b": "Ь",
    "h": "һ",
}
SPLITS = {
    "评": "讠平",
    "钱": "钅戋",
    "红": "纟工",
    "诉": "讠斥",
    "投": "扌殳",
    "你": "亻尔",
    "打": "扌丁",
    "账": "贝长",
    "转": "车专",
    "好": "女子",
}
EMOJI = {"差评": "👎", "红包": "🧧", "钱": "💰", "转账": "💸", "手机": "📱"}
INSERTS = ("*", " ", "-", ".", "\u200b", "~", "|", "·")
_CJK_PAIR = re.compile(r"[\u4e00-\u9fff]{2}")


def _target(text: str, rng: random.Random, words=TARGET_WORDS) -> re.Match | None:
    """A random occurrence of a word that matters, else of any two Chinese characters."""
    found = [m for w in words for m in re.finditer(re.escape(w), text)]
    if not found:
        found = list(_CJK_PAIR.finditer(text))
    return rng.choice(found) if found else None


def _replace(text: str, match: re.Match, new: str) -> str:
    return text[: match.start()] + new + text[match.end() :]


def _per_char(text: str, rng: random.Random, table: dict[str, str]) -> str | None:
    match = _target(text, rng, [w for w in TARGET_WORDS if any(c in table for c in w)])
    if match is None or not any(c in table for c in match.group(0)):
        return None
    chars = [rng.choice(table[c]) if c in table else c for c in match.group(0)]
    return _replace(text, match, "".join(chars))


def lookalike(text: str, rng: random.Random) -> str | None:
    return _per_char(text, rng, LOOKALIKES)


def split(text: str, rng: random.Random) -> str | None:
    return _per_char(text, rng, {c: [v] for c, v in SPLITS.items()})


@functools.lru_cache(maxsize=1)
def _s2t():
    import opencc

    return opencc.OpenCC("s2t")


def traditional(text: str, rng: random.Random) -> str | None:
    converted = _s2t().convert(text)
    return converted if converted != text else None


def initials(text: str, rng: random.Random) -> str | None:
    match = _target(text, rng, MULTI_CHARACTER_WORDS)
    if match is None:
        return None
    letters = "".join(s[0] for s in syllables(match.group(0)))
    return _replace(text, match, letters.upper() if rng.random() < 0.3 else letters)


def pinyin(text: str, rng: random.Random) -> str | None:
    match = _target(text, rng)
    if match is None:
        return None
    word = match.group(0)
    readings = syllables(word)
    if rng.random() < 0.5:
        new = "".join(readings)
    else:  # pinyin mixed with characters: cha评
        i = rng.randrange(len(word))
        new = "".join(readings[j] if j == i else c for j, c in enumerate(word))
    return _replace(text, match, new)


def homophone(text: str, rng: random.Random) -> str | None:
    match = _target(text, rng)
    if match is None:
        return None
    word = match.group(0)
    i = rng.randrange(len(word))
    options = sorted(homophone_table().get(syllables(word[i])[0], set()) - {word[i]})
    if not options:
        return None
    return _replace(text, match, word[:i] + rng.choice(options) + word[i + 1 :])


def shuffle(text: str, rng: random.Random) -> str | None:
    match = _target(text, rng, MULTI_CHARACTER_WORDS)
    if match is None:
        return None
    chars = list(match.group(0))
    i = rng.randrange(len(chars) - 1)
    chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return _replace(text, match, "".join(chars))


def emoji(text: str, rng: random.Random) -> str | None:
    match = _target(text, rng, tuple(EMOJI))
    if match is None or match.group(0) not in EMOJI:
        return None
    return _replace(text, match, EMOJI[match.group(0)])


def fullwidth(text: str, rng: random.Random) -> str | None:
    converted = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    if converted == text:  # no ASCII: disguise a word as initials first, as people do with ｃｐ
        text = initials(text, rng) or text
        converted = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    return converted if converted != text else None


def inserted(text: str, rng: random.Random) -> str | None:
    match = _target(text, rng, MULTI_CHARACTER_WORDS)
    if match is None:
        return None
    return _replace(text, match, rng.choice(INSERTS).join(match.group(0)))


FAMILIES: dict[str, Callable[[str, random.Random], str | None]] = {
    "lookalike": lookalike,
    "split": split,
    "traditional": traditional,
    "initials": initials,
    "pinyin": pinyin,
    "homophone": homophone,
    "shuffle": shuffle,
    "emoji": emoji,
    "fullwidth": fullwidth,
    "inserted": inserted,
}


def perturb(message: Message, family: str, rng: random.Random) -> Message | None:
    """The message with its text disguised by ``family``, or None when the family does not apply."""
    text = FAMILIES[family](message.text, rng)
    if text is None or text == message.text:
        return None
    return Message(
        text, message.context, f"{message.id}~{family}", message.role, message.label, "perturbed", (*message.tags, f"evasion:{family}")
    )


# Text preparation undoes most families, so their copies come out nearly identical to the
# original; the two it cannot undo are drawn more often, since only the model can learn them.
FAMILY_WEIGHTS = {family: 1.0 for family in FAMILIES} | {"lookalike": 4.0, "shuffle": 3.0}


def _weighted_order(rng: random.Random) -> list[str]:
    """The families in a random order where heavier ones tend to come first (weighted sampling without replacement)."""
    return sorted(FAMILIES, key=lambda f: rng.random() ** (1 / FAMILY_WEIGHTS[f]), reverse=True)


def augment(messages: list[Message], share: float, seed: int) -> list[Message]:
    """Perturbed copies of about ``share`` of the messages, of every label, each with a family drawn by :data:`FAMILY_WEIGHTS`."""
    rng = random.Random(seed)
    copies = []
    for message in messages:
        if rng.random() >= share:
            continue
        for family in _weighted_order(rng):  # the first family that applies
            copy = perturb(message, family, rng)
            if copy is not None:
                copies.append(copy)
                break
    return copies
