import pytest

from training.agreement import agreement


def test_perfect_and_partial_agreement():
    first = {"a": "extortion", "b": "normal", "c": "coercion", "d": "complaint"}
    assert agreement(first, dict(first))["kappa"] == pytest.approx(1.0)
    second = {**first, "d": "normal"}
    result = agreement(first, second)
    assert result["disagreements"] == ["d"] and result["agreement"] == 0.75
    assert result["kappa_per_label"]["extortion"] == pytest.approx(1.0)
    assert result["kappa_per_label"]["complaint"] < 1.0
    assert result["confusion_rows_first_cols_second"][2] == [0, 0, 0, 1]  # complaint row, normal column


def test_no_shared_ids_is_an_error():
    with pytest.raises(ValueError, match="share no ids"):
        agreement({"a": "normal"}, {"b": "normal"})
