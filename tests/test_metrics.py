import math

import pytest

from grader.metrics import score_metrics


def test_against_hand_computed_values():
    pred, ref = [1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.0, 5.0]
    m = score_metrics(pred, ref)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 1 + 1) / 4))
    assert m["within_0_5"] == 50.0 and m["within_1_0"] == 100.0
    # Pearson by hand: pred mean 2.5, ref mean 2.625
    dp = [-1.5, -0.5, 0.5, 1.5]
    dr = [-1.125, -0.625, -0.625, 2.375]
    r = sum(a * b for a, b in zip(dp, dr)) / math.sqrt(sum(a * a for a in dp) * sum(b * b for b in dr))
    assert m["pcc"] == pytest.approx(r)
    assert m["src"] == pytest.approx(0.9486832980505138)  # ranks 1,2,3,4 vs 1,2.5,2.5,4
    assert m["krc"] == pytest.approx(0.9128709291752769)


def test_constant_predictions_have_no_correlation():
    m = score_metrics([8, 8, 8], [7, 8, 9])
    assert math.isnan(m["pcc"]) and m["within_1_0"] == 100.0


def test_bad_input():
    with pytest.raises(ValueError, match="no scores"):
        score_metrics([], [])
    with pytest.raises(ValueError, match="equal-length"):
        score_metrics([1, 2], [1])
