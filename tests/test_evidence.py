import numpy as np
import pytest

from model.data_format import Message
from model.labels import LABELS
from serve import evidence

LONG = "亲你好我上周买的那件衣服质量太差了你们要是不给我退五百块钱我就给你们店刷一百个差评让大家都知道"


def log_odds(p: float) -> float:
    return float(np.log(p / (1 - p)))


class KeywordModel:
    """A stand-in classifier: extortion probability 0.5 for 差评 and 0.4 for 钱, so each word's true occlusion score is known."""

    def __init__(self):
        self.inputs = 0

    def extortion(self, text: str) -> float:
        return 0.5 * ("差评" in text) + 0.4 * ("钱" in text) + 0.05

    def predict_proba(self, messages):
        self.inputs += len(messages)
        probs = np.zeros((len(messages), len(LABELS)))
        for row, message in zip(probs, messages, strict=True):
            row[evidence.EXTORTION] = self.extortion(message.text)
            row[LABELS.index("normal")] = 1 - row[evidence.EXTORTION]
        return probs


class SureModel(KeywordModel):
    """Saturated: 1 - 1e-4 with either word, 1 - 1e-7 with both, where removing one word moves the probability by 1e-4."""

    def extortion(self, text: str) -> float:
        return {0: 0.01, 1: 1 - 1e-4, 2: 1 - 1e-7}[("差评" in text) + ("钱" in text)]


def test_long_message_gets_exact_scores_for_the_words_that_matter_with_fewer_model_inputs():
    model = KeywordModel()
    scores = dict(evidence.word_scores(model, Message(LONG)))
    words = [w for w, _ in evidence.word_scores(KeywordModel(), Message(LONG))]
    assert "".join(words) == LONG
    assert scores["差评"] == pytest.approx(log_odds(0.95) - log_odds(0.45))  # removing 差评: 0.95 -> 0.45
    assert scores["钱"] == pytest.approx(log_odds(0.95) - log_odds(0.55))
    assert all(abs(s) < 1e-9 for w, s in scores.items() if w not in ("差评", "钱"))
    assert model.inputs < len(words) + 1  # word by word would score every content word plus the message


def test_short_message_is_scored_word_by_word_in_one_call():
    model = KeywordModel()
    scores = evidence.word_scores(model, Message("不给钱就差评"))
    assert model.inputs == len([w for w, _ in scores]) + 1
    assert dict(scores)["差评"] == pytest.approx(log_odds(0.95) - log_odds(0.45))


def test_message_the_model_does_not_suspect_needs_only_the_coarse_call():
    model = KeywordModel()
    text = "亲你好我上周买的那件衣服质量太差了你们什么时候能给我换一件新的让我知道一下"
    scores = evidence.word_scores(model, Message(text))
    content = [w for w, _ in scores if evidence._CONTENT.search(w)]
    assert model.inputs < len(content) // 2
    assert all(s == pytest.approx(0.0) for _, s in scores)


def test_a_sure_model_still_names_its_words():
    scores = dict(evidence.word_scores(SureModel(), Message("不给钱就差评")))
    # the probability barely moves (1e-4) when one word goes; its log-odds fall by ln(1e7 / 1e4) = ln(1e3)
    assert scores["差评"] == pytest.approx(np.log(1e3), rel=1e-3) and scores["给钱"] == pytest.approx(np.log(1e3), rel=1e-3)
    assert max(abs(s) for w, s in scores.items() if w not in ("差评", "给钱")) < 1e-6
