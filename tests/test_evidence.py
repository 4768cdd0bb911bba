import numpy as np
import pytest

from model.data_format import Message
from model.labels import LABELS
from serve import evidence

LONG = "亲你好我上周买的那件衣服质量太差了你们要是不给我退五百块钱我就给你们店刷一百个差评让大家都知道"


class KeywordModel:
    """A stand-in classifier: extortion probability 0.5 for 差评 and 0.4 for 钱, so each word's true occlusion score is known."""

    def __init__(self):
        self.inputs = 0

    def predict_proba(self, messages):
        self.inputs += len(messages)
        probs = np.zeros((len(messages), len(LABELS)))
        for row, message in zip(probs, messages, strict=True):
            row[evidence.EXTORTION] = 0.5 * ("差评" in message.text) + 0.4 * ("钱" in message.text) + 0.05
            row[LABELS.index("normal")] = 1 - row[evidence.EXTORTION]
        return probs


def test_long_message_gets_exact_scores_for_the_words_that_matter_with_fewer_model_inputs():
    model = KeywordModel()
    scores = dict(evidence.word_scores(model, Message(LONG)))
    words = [w for w, _ in evidence.word_scores(KeywordModel(), Message(LONG))]
    assert "".join(words) == LONG
    assert scores["差评"] == pytest.approx(0.5)
    assert scores["钱"] == pytest.approx(0.4)
    assert all(abs(s) < 1e-9 for w, s in scores.items() if w not in ("差评", "钱"))
    assert model.inputs < len(words) + 1  # word by word would score every content word plus the message


def test_short_message_is_scored_word_by_word_in_one_call():
    model = KeywordModel()
    scores = evidence.word_scores(model, Message("不给钱就差评"))
    assert model.inputs == len([w for w, _ in scores]) + 1
    assert dict(scores)["差评"] == pytest.approx(0.5)


def test_message_the_model_does_not_suspect_needs_only_the_coarse_call():
    model = KeywordModel()
    text = "亲你好我上周买的那件衣服质量太差了你们什么时候能给我换一件新的让我知道一下"
    scores = evidence.word_scores(model, Message(text))
    content = [w for w, _ in scores if evidence._CONTENT.search(w)]
    assert model.inputs < len(content) // 2
    assert all(s == pytest.approx(0.0) for _, s in scores)
