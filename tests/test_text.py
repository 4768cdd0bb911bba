import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from model.text import INITIALS, LEXICON, prepare_text, syllables

# Ideographs of the basic block, extension A and the supplementary planes: OpenCC maps some (麨) to extension B (𪎊).
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U000323af]")


@pytest.mark.parametrize(
    "disguised, prepared",
    [
        ("不给hb就cp，自己看着办", "不给红包就差评,自己看着办"),  # initials
        ("给我转５００，不然差*评", "给我转500,不然差评"),  # full-width, inserted symbol
        ("查評已發，💰到位就刪", "差评已发,钱到位就删"),  # homophone, traditional, emoji
        ("chaping走起", "差评走起"),  # full pinyin
        ("cha评，懂？", "差评,懂?"),  # pinyin mixed with characters
        ("差\u200b评", "差评"),  # zero-width space
        ("差 评", "差评"),  # space between characters
        ("讠平论区见", "评论区见"),  # split characters
        ("洪包拿来", "红包拿来"),
        ("VX联系，zfb也行", "微信联系,支付宝也行"),
    ],
)
def test_disguises_are_undone(disguised, prepared):
    assert prepare_text(disguised) == prepared


def test_no_two_lexicon_words_can_start_at_the_same_place():
    # The lexicon is resolved in one scan, which relies on this: first syllables all differ,
    # and no initial is the start of a word's pinyin.
    first_syllables = [syllables(word)[0] for word in LEXICON]
    assert len(set(first_syllables)) == len(LEXICON)
    assert not any(syllable.startswith(initial) for syllable in first_syllables for initial in INITIALS)


@pytest.mark.parametrize(
    "text",
    [
        "威信支付可以吗",
        "这条红宝石项链好看",
        "hp打印机墨盒",
        "shopping 很开心",
        "亲，您的快递已经发出了",
        "一句抱歉都没有",
        "闲置包包说正品",
        "尾款也付了",
        "队友都打完一把了",
    ],
)
def test_ordinary_words_and_punctuation_are_left_alone(text):
    assert prepare_text(text).replace(",", "，") == text


unicode_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
chat_like = st.lists(
    st.sampled_from([*list("差评红包转账钱给我不就cpHB ＊*.\u200b\u200f́\u202e💰🧧評轉賬ｃｐ"), "cha", "ping", "hong", "bao"]),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(unicode_text, chat_like))
@example("麨")
def test_any_string_prepares_idempotently_without_losing_cjk(text):
    once = prepare_text(text)
    assert isinstance(once, str)
    assert prepare_text(once) == once
    if CJK.search(text):
        assert CJK.search(once)


@settings(max_examples=5, deadline=None)
@given(st.text(alphabet=st.sampled_from("差评给钱 \u200b\u200f\u0301a😀\ud800"), min_size=1, max_size=20))
def test_long_strings_with_surrogates_rtl_and_combining_marks(piece):
    text = piece * (100_000 // len(piece))
    once = prepare_text(text)
    assert prepare_text(once) == once
