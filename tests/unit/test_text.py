"""Text handling for speech: limits, sentences, numbers/dates, pinyin, script segmentation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digihuman.errors import InputError
from digihuman.text import (
    Run,
    check_length,
    detect_language,
    normalize_en,
    normalize_zh,
    sentences_for_speech,
    split_by_script,
    split_sentences,
    to_pinyin,
)


def test_sentences_english_keeps_decimals_and_abbreviations() -> None:
    text = "Hello Dr. Smith. It costs 3.5 dollars! Really? Yes;  fine"
    assert split_sentences(text) == [
        "Hello Dr. Smith.",
        "It costs 3.5 dollars!",
        "Really?",
        "Yes;",
        "fine",
    ]


def test_sentences_chinese_punctuation_and_mixed() -> None:
    text = "你好。今天天气很好！我们去公园吧？好的；I agree.\n新的一行"
    assert split_sentences(text) == [
        "你好。",
        "今天天气很好！",
        "我们去公园吧？",
        "好的；",
        "I agree.",
        "新的一行",
    ]


def test_sentences_closing_quotes_stay_with_the_sentence() -> None:
    assert split_sentences("他说：“你好。”然后走了。") == ["他说：“你好。”", "然后走了。"]


def test_long_sentence_is_cut_at_commas_then_spaces() -> None:
    text = "，".join(["这是一个很长的句子的一部分"] * 30) + "。"
    parts = split_sentences(text, max_len=50)
    assert all(len(p) <= 50 for p in parts)
    assert "".join(parts) == text
    words = " ".join(["word"] * 200)
    parts = split_sentences(words, max_len=60)
    assert all(len(p) <= 60 for p in parts)
    assert " ".join(parts).split() == words.split()


def test_unbreakable_text_is_still_bounded() -> None:
    parts = split_sentences("x" * 1000, max_len=64)
    assert all(len(p) <= 64 for p in parts) and "".join(parts) == "x" * 1000


@settings(max_examples=60, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("abc 你好。，,.!?；\n123")), min_size=0, max_size=400),
    st.integers(min_value=8, max_value=120),
)
def test_split_sentences_is_bounded_and_loses_nothing(text: str, max_len: int) -> None:
    parts = split_sentences(text, max_len=max_len)
    assert all(0 < len(p) <= max_len for p in parts)
    # every letter and digit survives, in order (punctuation-only pieces carry no speech)
    assert re.sub(r"\W", "", "".join(parts)) == re.sub(r"\W", "", text)


def test_length_limit_and_empty_text() -> None:
    with pytest.raises(InputError, match="empty"):
        check_length("   \n", 100)
    with pytest.raises(InputError, match="over the limit of 100"):
        check_length("a" * 101, 100)
    assert check_length("  hi  ", 100) == "hi"
    with pytest.raises(InputError, match="limit"):
        sentences_for_speech("好" * 2001, max_chars=2000)


def test_english_numbers_dates_times_money() -> None:
    assert normalize_en("On 2024-03-15 at 10:30") == (
        "On March fifteenth, twenty twenty-four at ten thirty"
    )
    assert normalize_en("It costs $12.50.") == "It costs twelve dollars and fifty cents."
    assert normalize_en("up 3.5% today") == "up three point five percent today"
    assert normalize_en("the 2nd and 21st") == "the second and twenty-first"
    assert normalize_en("in 1999") == "in nineteen ninety-nine"
    assert normalize_en("1,250 people") == "one thousand, two hundred and fifty people"
    assert normalize_en("at 7:05 pm") == "at seven oh five p m"
    assert normalize_en("no digits here.") == "no digits here."


def test_chinese_numbers_dates_times() -> None:
    assert normalize_zh("2024-03-15") == "二零二四年三月十五日"
    assert normalize_zh("下午3:30开会") == "下午三点三十分开会"
    assert normalize_zh("我有2个苹果") == "我有两个苹果"
    assert normalize_zh("价格是12.5元") == "价格是十二点五元"
    assert normalize_zh("增长了50%") == "增长了百分之五十"
    assert normalize_zh("电话13800138000") == "电话一三八零零一三八零零零"
    assert normalize_zh("第1名，共1,000人") == "第一名，共一千人"


def test_pinyin_tones_punctuation_and_u_umlaut() -> None:
    assert to_pinyin("你好，世界。") == "ni2 hao3, shi4 jie4."
    assert to_pinyin("绿色的女孩") == "lv4 se4 de5 nv3 hai2"
    assert to_pinyin("我们！") == "wo3 men5."
    # stray digits are read one by one
    assert to_pinyin("3号") == "san1 hao4"
    assert to_pinyin(normalize_zh("我有2个苹果。")) == "wo3 you3 liang3 ge4 ping2 guo3."


def test_split_by_script_mixed_sentence() -> None:
    runs = split_by_script("我喜欢Python编程，I have 3个苹果 and 2 pears.")
    assert runs == [
        Run("zh", "我喜欢"),
        Run("en", "Python"),
        Run("zh", "编程，"),
        Run("en", "I have"),
        Run("zh", "3个苹果"),
        Run("en", "and 2 pears."),
    ]
    assert split_by_script("123") == [Run("en", "123")]
    assert split_by_script("123", default="zh") == [Run("zh", "123")]
    assert split_by_script("  ") == []


def test_detect_language() -> None:
    assert detect_language("今天天气很好") == "zh"
    assert detect_language("Hello there, how are you") == "en"
    assert detect_language("我喜欢Python") == "zh"
    assert detect_language("123", default="zh") == "zh"
