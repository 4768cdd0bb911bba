import json

import numpy as np
import pytest

from training.evaluate import compute_metrics, expected_calibration_error, threshold_for_precision, write_report


def test_perfect_confident_predictions():
    y = np.array([0, 1, 2, 3, 0])
    probs = np.eye(4)[y]
    metrics = compute_metrics(y, probs)
    assert metrics["macro_f1"] == 1.0 and metrics["accuracy"] == 1.0
    assert metrics["expected_calibration_error"] == pytest.approx(0.0)
    assert metrics["confusion_matrix"]["rows_true_cols_predicted"][0] == [2, 0, 0, 0]


def test_overconfident_mistakes_show_as_calibration_error():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1, 0, 0], [0.1, 0.9, 0, 0], [0.1, 0.9, 0, 0], [0.9, 0.1, 0, 0]])
    assert expected_calibration_error(y, probs) == pytest.approx(0.4)
    assert compute_metrics(y, probs)["per_class"]["extortion"]["f1"] == pytest.approx(0.5)


def test_threshold_reaches_the_target_precision():
    y = np.array([0, 0, 0, 1, 1])
    probs = np.zeros((5, 4))
    probs[:, 0] = [0.9, 0.8, 0.4, 0.6, 0.1]
    found = threshold_for_precision(y, probs, 0, 0.99)
    assert found["threshold"] == pytest.approx(0.8) and found["recall"] == pytest.approx(2 / 3)
    assert threshold_for_precision(y, probs, 2, 0.99)["recall"] is None  # no examples of that label


def test_report_files(tmp_path):
    y = np.array([0, 1, 2, 3])
    probs = np.full((4, 4), 0.1) + np.eye(4)[[0, 1, 3, 3]] * 0.6
    metrics = write_report(y, probs, tmp_path, "Test")
    assert json.loads((tmp_path / "metrics.json").read_text())["n"] == 4
    report = (tmp_path / "report.md").read_text()
    assert "| complaint | 0.000 | 0.000 | 0.000 | 1 |" in report
    assert metrics["macro_f1"] == pytest.approx((1 + 1 + 0 + 2 / 3) / 4)
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
