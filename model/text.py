"""Text preparation: undo the disguises people use to slip past keyword filters.

The same function runs in training, evaluation, batch and the app; the original
text is kept and the model sees the prepared text. Steps, in order:

1. Lone surrogates, zero-width, bidirectional and other format or control characters removed.
2. Unicode NFKC (full-width letters and digits become ASCII); whitespace runs become one space.
3. Traditional characters converted to simplified (OpenCC ``t2s``).
4. Emoji that stand for words replaced by the words (💰 → 钱, 🧧 → 红包).
5. Split characters (拆字) of the words that matter joined again (讠平 → 评).
6. Symbols and spaces inserted between Chinese characters removed (差*评, 差 评).
7. The domain lexicon: pinyin (chaping, cha评), initials (cp, hb) and homophones
   (查评, 洪包) of 差评, 红包, 转账 … replaced by the words. Homophones come from
   pypinyin's main reading of every character, not from a hand list of spellings; a
   candidate that is a common word (威信) or part of one (一句抱歉, 红宝石) is left alone.

The result is idempotent: preparing prepared text changes nothing.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# The words whose disguises matter here, and the readings people type for them.
LEXICON = ("差评", "好评", "中评", "红包", "返现", "退款", "转账", "支付宝", "微信", "投诉", "举报", "曝光", "删评", "打款", "收款码")
# Initials in common use; an initial alone (bare "cp") stands for the word only as a whole token.
# (hp and bg are left out: HP the brand and "background" are far more common in chat.)
INITIALS = {
    "cp": "差评",
    "hb": "红包",
    "fx": "返现",
    "tk": "退款",
    "zz": "转账",
    "zfb": "支付宝",
    "wx": "微信",
    "vx": "微信",
    "ts": "投诉",
    "jb": "举报",
}
EMOJI_WORDS = {
    "💰": "钱",
    "💴": "钱",
    "💵": "钱",
    "💸": "钱",
    "🧧": "红包",
    "👎": "差评",
    "⭐": "星",
    "🌟": "星",
    "👍": "赞",
    "📱": "手机",
    "☎": "电话",
    "📞": "电话",
}
# Only splits whose first part is a radical that never stands alone (女子 and 车专 are real words).
SPLIT_CHARACTERS = {
    "讠平": "评",
    "钅戋": "钱",
    "纟工": "红",
    "讠斥": "诉",
    "扌殳": "投",
    "亻尔": "你",
    "扌丁": "打",
    "氵肖": "消",
    "讠平论": "评论",
}
# Characters people put between Chinese characters to break keywords apart. Not , ! ? ; : ( ):
# NFKC turns Chinese clause punctuation (，！？) into those, and they carry meaning.
_INSERTED = r"[\s*\-_.·•~|/\\+=^`'\"#@$%&\[\]{}<>]"
_CJK = r"[\u3400-\u4dbf\u4e00-\u9fff]"
_INSERTED_BETWEEN_CJK = re.compile(rf"(?<={_CJK}){_INSERTED}{{1,3}}(?={_CJK})")
_WHITESPACE = re.compile(r"\s+")
# Common words (jieba frequency at least this) are never taken for a homophone.
COMMON_WORD_FREQUENCY = 20


@functools.lru_cache(maxsize=1)
def _format_characters() -> re.Pattern:
    """A class of the characters to drop, as ranges: a regex scans for them faster than str.translate."""

    def dropped(code: int) -> bool:
        # Cf: zero-width and bidi marks; Cc: control characters (\t, \n become spaces later); Cs: surrogates;
        # FE0E, FE0F: emoji variation selectors.
        category = unicodedata.category(chr(code))
        return category in ("Cf", "Cs") or (category == "Cc" and chr(code) not in "\t\n\r") or code in (0xFE0E, 0xFE0F)

    ranges, start = [], None
    for code in range(0x110001):
        if code < 0x110000 and dropped(code):
            start = code if start is None else start
        elif start is not None:
            ranges.append(f"\\U{start:08x}-\\U{code - 1:08x}")
            start = None
    return re.compile(f"[{''.join(ranges)}]+")


@functools.lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


@functools.lru_cache(maxsize=1)
def homophone_table() -> dict[str, set[str]]:
    """Toneless pinyin syllables -> the characters read that way (pypinyin's dictionary)."""
    from pypinyin.pinyin_dict import pinyin_dict

    by_syllable: dict[str, set[str]] = {}
    for code, readings in pinyin_dict.items():
        if 0x4E00 <= code <= 0x9FFF:
            # Only a character's main reading: rare readings of polyphones (包, 款) would match far too much.
            by_syllable.setdefault(_toneless(readings.split(",")[0]), set()).add(chr(code))
    return by_syllable


def _toneless(reading: str) -> str:
    # What pypinyin's Style.NORMAL gives: tone marks dropped, ü written v.
    decomposed = unicodedata.normalize("NFD", reading).replace("u\u0308", "v")
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def syllables(word: str) -> list[str]:
    """Toneless pinyin syllables of a word."""
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin(word, style=Style.NORMAL)


def _any_case(letters: str) -> str:
    # Spelled out rather than re.IGNORECASE, which makes every test of the large Chinese character classes slow.
    return "".join(f"[{c}{c.upper()}]" for c in letters)


@functools.lru_cache(maxsize=1)
def _lexicon_regex() -> re.Pattern:
    """One regex for the whole lexicon, a named group per word (w0, w1 …) and one for the initials.

    A word's branch matches its homophones in characters, its pinyin, or pinyin mixed with
    characters. The words' first syllables all differ, so at most one word can start at any
    place, and one scan (leftmost match first) finds them all. The leading look-ahead lets
    the scan skip, with a single class test, every character no branch can start with.
    """
    readings = homophone_table()
    branches, starts = [], set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for n, word in enumerate(LEXICON):
        parts = []
        readings_of_word = syllables(word)
        for i, (char, syllable) in enumerate(zip(word, readings_of_word, strict=True)):
            homophones = readings.get(syllable, set()) | {char}
            if i == 0:
                starts |= homophones
            # Pinyin at either end may not run into more letters, so "ping" in "shopping" is left alone.
            before = r"(?<![a-zA-Z])" if i == 0 else ""
            after = r"(?![a-zA-Z])" if i == len(readings_of_word) - 1 else ""
            parts.append(f"(?:[{''.join(sorted(homophones))}]|{before}{_any_case(syllable)}{after})")
        branches.append(f"(?P<w{n}>{' ?'.join(parts)})")
    initials = "|".join(_any_case(i) for i in sorted(INITIALS, key=len, reverse=True))
    branches.append(rf"(?<![a-zA-Z])(?P<initials>{initials})(?![a-zA-Z])")
    return re.compile(f"(?=[{''.join(sorted(starts))}])(?:{'|'.join(branches)})")


@functools.lru_cache(maxsize=1)
def _common_words() -> dict[str, int]:
    import jieba

    jieba.setLogLevel(60)
    jieba.initialize()
    return jieba.dt.FREQ


def _is_ordinary_text(text: str, start: int, end: int) -> bool:
    """Whether the matched span is an ordinary word (威信) or part of ordinary words (一句抱歉, 红宝石, 查评论).

    The span's surroundings are segmented with jieba's dictionary: a homophone stands for a
    lexicon word only when no common word crosses its edges and it is not a common word itself.
    """
    import jieba

    words = _common_words()
    if words.get(text[start:end], 0) >= COMMON_WORD_FREQUENCY:
        return True
    window_start = max(start - 4, 0)
    position = window_start
    for token in jieba.cut(text[window_start : end + 4], HMM=False):
        token_end = position + len(token)
        crosses = position < start < token_end or position < end < token_end
        if crosses and len(token) > 1 and words.get(token, 0) >= COMMON_WORD_FREQUENCY:
            return True
        position = token_end
    return False


def _resolve_lexicon(text: str) -> str:
    def replace(match: re.Match) -> str:
        found = match.group(0)
        if match.lastgroup == "initials":
            return INITIALS[found.lower()]
        word = LEXICON[int(match.lastgroup[1:])]
        if found == word or _is_ordinary_text(text, match.start(), match.end()):
            return found
        return word

    return _lexicon_regex().sub(replace, text)


# Emoji and split characters in one scan: the emoji's words never contain a split character's parts.
_SYMBOL_WORDS = {**EMOJI_WORDS, **SPLIT_CHARACTERS}
_SYMBOLS = re.compile("|".join(map(re.escape, sorted(_SYMBOL_WORDS, key=len, reverse=True))))


def prepare_text(text: str) -> str:
    """The text the model sees. Never raises on any ``str``; never empties a text that has CJK characters."""
    text = _format_characters().sub("", text)
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    text = _t2s().convert(text)
    text = _SYMBOLS.sub(lambda m: _SYMBOL_WORDS[m.group(0)], text)
    text = _INSERTED_BETWEEN_CJK.sub("", text)
    resolved = _resolve_lexicon(text)
    if resolved == text:
        return text
    # Replacing initials can leave a space between Chinese characters ("cp 哦"), so collapse again.
    return unicodedata.normalize("NFKC", _INSERTED_BETWEEN_CJK.sub("", resolved))
