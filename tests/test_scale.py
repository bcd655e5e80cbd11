import pytest
import torch

from grader.scale import ScoreScale, get_scale


def test_class_values():
    assert get_scale("sandi").values.tolist() == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0]
    assert get_scale("speechocean762").num_classes == 11


def test_fair_average_target_brackets_the_score():
    scale = get_scale("sandi")
    target = scale.fair_average_target(torch.tensor([4.3, 2.0, 6.0, 7.5]))
    assert target[0].tolist() == pytest.approx([0, 0, 0, 0, 0.4, 0.6, 0, 0, 0], abs=1e-6)
    assert target[1, 0] == 1 and target[2, -1] == 1 and target[3, -1] == 1  # clamped
    assert scale.soft_score(target).tolist() == pytest.approx([4.3, 2.0, 6.0, 6.0], abs=1e-5)


def test_hard_soft_and_nearest():
    scale = get_scale("speechocean762")
    probs = torch.zeros(11)
    probs[7], probs[8] = 0.25, 0.75
    assert scale.hard_score(probs).item() == 8
    assert scale.soft_score(probs).item() == pytest.approx(7.75)
    assert scale.nearest_class(torch.tensor([7.4, 7.6, -3.0])).tolist() == [7, 8, 0]


def test_cefr_and_round_trip():
    scale = get_scale("sandi")
    assert scale.cefr_band(4.4) == "B2" and scale.cefr_band(2.0) == "A2" and scale.cefr_band(6.0) == "C2"
    assert ScoreScale.from_dict(scale.to_dict()) == scale
    with pytest.raises(ValueError, match="unknown score scale"):
        get_scale("ielts")
