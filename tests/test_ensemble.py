"""Ensemble checkpoints (grader.ensemble): two trained tiny graders scored on one encoder pass grade a real clip
with the mean of what each gives alone, through the same front door; members that cannot share an encoder pass
are refused."""

import json

import numpy as np
import pytest

from grader.audio import load_audio
from grader.ensemble import main as ensemble_main
from grader.ensemble import write_ensemble
from grader.inference import Grader
from grader.merge import main as merge_main
from grader.train import main as train_main

TEXT = "WE CALL IT BEAR"


def train(out, tiny_whisper, small_manifest, *extra):
    train_main(["--manifest", str(small_manifest), "--model", tiny_whisper, "--dev-speakers", "3", "--epochs", "1",
                "--batch-size", "8", "--target", "total,accuracy,fluency,prosodic", "--cache-dir", "",
                "--out", str(out), *extra])
    return out


@pytest.fixture(scope="module")
def word_checkpoint(tiny_whisper, small_manifest, speechocean_clips, tmp_path_factory):
    return train(tmp_path_factory.mktemp("words") / "words", tiny_whisper, small_manifest, "--seed", "1",
                 "--word-scores", str(speechocean_clips / "words.tsv"), "--word-target", "accuracy,total")


def test_an_ensemble_grades_with_its_members_mean(tiny_checkpoint, word_checkpoint, speech_clip, tmp_path):
    out = write_ensemble(tmp_path / "ensemble", [tiny_checkpoint, word_checkpoint])
    assert json.loads((out / "grader.json").read_text())["members"] == ["member0", "member1"]
    audio = load_audio(speech_clip)
    alone = [Grader.load(m).grade(audio, TEXT) for m in (tiny_checkpoint, word_checkpoint)]
    grader = Grader.load(out)
    both = grader.grade(audio, TEXT)
    assert len(grader.members) == 2 and grader.word_aspects == ["accuracy", "total"]
    for aspect, score in both.scores.items():
        probs = np.mean([a.scores[aspect].probs for a in alone], axis=0)
        assert np.allclose(score.probs, probs, atol=1e-5)
        assert score.soft == pytest.approx(float(probs @ np.arange(11)), abs=1e-4)
        assert score.regression == pytest.approx(np.mean([a.scores[aspect].regression for a in alone]), abs=1e-4)
        assert score.hard == float(np.argmax(probs))
    assert both.words == alone[1].words  # the only member with word heads gives the words
    assert both.checkpoint.startswith("ensemble[") and "+" in both.checkpoint

    assessed = grader.assess(speech_clip, TEXT)  # the front door: gate, trim, model, review
    assert assessed.scorable and assessed.prediction.words and assessed.to_dict()["scores"]["total"]["soft"] > 0


def test_members_that_cannot_share_an_encoder_pass_are_refused(tiny_checkpoint, tiny_whisper, small_manifest,
                                                               tmp_path, capsys):
    encoder = train(tmp_path / "encoder", tiny_whisper, small_manifest, "--lora-scope", "all")
    with pytest.raises(ValueError, match="leave the audio encoder frozen"):
        write_ensemble(tmp_path / "bad", [tiny_checkpoint, encoder])
    with pytest.raises(SystemExit, match="cannot ensemble"):
        ensemble_main([str(tmp_path / "bad"), str(tiny_checkpoint), str(encoder)])
    fewer = train(tmp_path / "fewer", tiny_whisper, small_manifest, "--target", "total")
    with pytest.raises(ValueError, match="same aspects"):
        write_ensemble(tmp_path / "bad", [tiny_checkpoint, fewer])
    ensemble_main([str(tmp_path / "good"), str(tiny_checkpoint), str(tiny_checkpoint)])
    assert "ensemble of 2 graders" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="is an ensemble"):
        merge_main([str(tmp_path / "good"), str(tmp_path / "merged")])
