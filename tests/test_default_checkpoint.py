"""The shipped default grader: loads offline and agrees with the human experts on real speech.

A wiring check of model, decoding and scale (Pearson >= 0.6 over 50 clips); the dev table in
checkpoints/default/MODEL_CARD.md is the real measure.
"""

import json

import pytest
from scipy import stats

from grader.audio import load_audio
from grader.data import read_manifest
from grader.inference import DEFAULT_CHECKPOINT, Grader
from grader.stretch import STRENGTH


@pytest.fixture(scope="module")
def default_grader() -> Grader:
    if not (DEFAULT_CHECKPOINT / "grader.json").is_file():
        pytest.fail(f"the default checkpoint is missing from {DEFAULT_CHECKPOINT}")
    return Grader.load()


def test_default_checkpoint_is_small_and_documented(default_grader):
    size = sum(f.stat().st_size for f in DEFAULT_CHECKPOINT.rglob("*") if f.is_file())
    assert size < 20 * 2**20, "no base weights in git: only LoRA and heads"
    assert (DEFAULT_CHECKPOINT / "MODEL_CARD.md").is_file() and (DEFAULT_CHECKPOINT / "train.sh").is_file()
    assert default_grader.aspects[0] == "total" and default_grader.word_aspects == ["accuracy", "total"]
    assert len(default_grader.members) == len(json.loads((DEFAULT_CHECKPOINT / "grader.json").read_text())["members"])
    assert default_grader.info["stretch"]["strength"] == STRENGTH  # the model card's "Calibration across the scale"
    assert default_grader.info["checkpoint_id"].endswith(f"-stretch{STRENGTH:g}") and len(default_grader.stretches) == 4


def test_default_grader_agrees_with_experts(default_grader, speechocean_dir):
    responses = read_manifest(speechocean_dir / "labels.tsv", ["total"])[::50]  # 50 clips, every speaker range
    assert len(responses) == 50
    predictions = default_grader.grade_batch([load_audio(r.audio) for r in responses], [r.text for r in responses])
    soft = [p.scores["total"].soft for p in predictions]
    human = [r.scores["total"] for r in responses]
    assert stats.pearsonr(soft, human).statistic >= 0.6
    assert set(predictions[0].scores) == {"total", "accuracy", "fluency", "prosodic"}
