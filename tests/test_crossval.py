"""Cross-validation by speaker, the out-of-fold report, loss re-weighting and word-level heads, on real clips and
the experts' word scores (words.tsv), with tiny random Whispers for the training runs."""

import csv
import json

import numpy as np
import pytest
import torch
from scipy import stats

from grader.audio import load_audio
from grader.backbones import BackboneConfig
from grader.data import read_manifest, read_word_scores, speaker_folds
from grader.inference import DEFAULT_CHECKPOINT, Grader
from grader.model import GraderModel, ModelConfig, label_weights
from grader.report import band_table, ensemble, flag_figures, joined, read_oof, restrict
from grader.report import main as report_main
from grader.scale import get_scale
from grader.train import main as train_main
from grader.train import word_targets


def test_speaker_folds_never_put_a_speaker_on_both_sides(speechocean_dir):
    responses = read_manifest(speechocean_dir / "labels.tsv", ["total"])
    fold_of = speaker_folds(responses, 5, seed=0, target="total")
    assert sorted(set(fold_of)) == [0, 1, 2, 3, 4]
    for k in range(5):
        held_out = {r.speaker for r, f in zip(responses, fold_of) if f == k}
        trained_on = {r.speaker for r, f in zip(responses, fold_of) if f != k}
        assert not held_out & trained_on and len(held_out) == 25
    # dealt by mean score, so each fold holds weak speakers too: every fold's mean total within 0.3 of the others
    means = [np.mean([r.scores["total"] for r, f in zip(responses, fold_of) if f == k]) for k in range(5)]
    assert max(means) - min(means) < 0.3, means
    assert speaker_folds(responses, 5, seed=1, target="total") != fold_of
    with pytest.raises(ValueError, match="folds"):
        speaker_folds(responses[:40], 5)  # two speakers


def test_word_spans_align_to_the_scored_words(tiny_whisper, speechocean_clips):
    """A real response and its words.tsv rows: each word's span decodes to that word, and its targets are that
    word's expert scores ("DON'T" is two tokens, one word)."""
    responses = {r.utt_id: r for r in read_manifest(speechocean_clips / "labels.tsv", ["total"])}
    words = read_word_scores(speechocean_clips / "words.tsv", ["accuracy", "total"])
    model = GraderModel(ModelConfig(backbone=BackboneConfig("whisper", tiny_whisper),
                                    word_aspects=["accuracy", "total"]))
    backbone = model.backbone
    weak = next(u for u, w in words.items() if min(w.scores["accuracy"]) < 5 and "'" in responses[u].text)
    for utt_id in ("000010011", weak):
        text = responses[utt_id].text
        ids = backbone.prompt_ids(text)
        spans = backbone.word_spans(text)
        assert [backbone.processor.tokenizer.decode(ids[a:b]).strip() for a, b in spans] == text.split()
        target = word_targets([responses[utt_id]], words, ["accuracy", "total"])[0]
        assert target.shape == (len(text.split()), 2)
        assert target[:, 0].tolist() == words[utt_id].scores["accuracy"]
    rows = [r for r in csv.DictReader(open(speechocean_clips / "words.tsv"), delimiter="\t")
            if r["utt_id"] == "000010011"]
    assert [r["word"] for r in rows] == responses["000010011"].text.split() == ["WE", "CALL", "IT", "BEAR"]
    # the word heads give one row per word of a real clip, for its own text only
    audio = model.backbone.encode(model.backbone.features([load_audio(responses["000010011"].audio)] * 2))
    output = model.eval()(audio, ["WE CALL IT BEAR", None])
    assert output.words[0].shape == (4, 2) and output.words[1] is None


def test_label_weights_favour_rare_scores():
    targets = torch.tensor([[8.0]] * 90 + [[3.0]] * 10)
    weights = label_weights(targets, get_scale("speechocean762"), power=0.5)
    assert weights.mean().item() == pytest.approx(1.0) and weights[-1, 0] > 2 * weights[0, 0]


def test_band_table_and_flag_figures():
    human = [2, 3, 5, 7, 8, 9]
    predicted = [5.5, 4.0, 5.0, 7.5, 8.0, 5.0]
    bands = band_table(predicted, human)
    assert [b["n"] for b in bands] == [2, 1, 1, 2]
    assert bands[0]["mean_prediction"] == pytest.approx(4.75) and bands[0]["mae"] == pytest.approx(2.25)
    assert bands[0]["off_by_more_than_2"] == pytest.approx(50.0) and bands[3]["off_by_more_than_2"] == 50.0
    flags = flag_figures([True, True, False, False, False, False], predicted, human)
    assert (flags["misgraded"], flags["caught"], flags["precision"], flags["recall"]) == (2, 1, 0.5, 0.5)


def test_crossval_with_word_heads_writes_out_of_fold_predictions(tiny_whisper, small_manifest, speechocean_clips,
                                                                tmp_path, capsys):
    out = tmp_path / "cv"
    train_main(["--manifest", str(small_manifest), "--model", tiny_whisper, "--folds", "3", "--epochs", "1",
                "--batch-size", "8", "--target", "total,accuracy", "--cache-dir", str(tmp_path / "cache"),
                "--word-scores", str(speechocean_clips / "words.tsv"), "--word-target", "accuracy,total",
                "--reweight", "0.5", "--out", str(out)])
    rows = list(csv.DictReader(open(out / "oof.tsv"), delimiter="\t"))
    responses = read_manifest(small_manifest, ["total"])
    assert [r["utt_id"] for r in rows] == [r.utt_id for r in responses]  # every response once, in manifest order
    fold_of_speaker = {}
    for row in rows:
        assert fold_of_speaker.setdefault(row["speaker"], row["fold"]) == row["fold"]
    for k in range(3):  # each fold's model trained on exactly the other folds' responses
        info = json.loads((out / f"fold{k}" / "grader.json").read_text())
        assert info["data"]["train"] == sum(r["fold"] != str(k) for r in rows)
    n_words = sum(len(r.text.split()) for r in responses)
    assert len(list(csv.DictReader(open(out / "oof_words.tsv"), delimiter="\t"))) == n_words
    report = json.loads((out / "cv.json").read_text())
    assert report["metrics"]["word/accuracy"]["n"] == n_words and report["metrics"]["total/soft"]["n"] == len(responses)
    assert set(report["spread"]["total/soft"]) == {"mean", "sd"} and len(report["bands"]["total/soft"]) == 4
    assert 0 <= report["review"]["soft"]["flagged"] <= len(responses)
    capsys.readouterr()
    report_main([str(out), "--detail"])
    printed = capsys.readouterr().out
    assert "| 0–3 |" in printed and "Word level" in printed and "Review flag" in printed
    report_main([str(out), "--folds", "0,2"])  # the figures recomputed from oof.tsv on two folds
    assert "(folds 0,2)" in capsys.readouterr().out
    report_main([str(out), "--stretch", "0.5"])  # the stretch, each fold's map fitted on the other folds
    assert f"{out.name} stretched 0.5" in capsys.readouterr().out
    run = (report, read_oof(out), read_oof(out, "oof_words.tsv"))
    same = ensemble([run, run])[0]  # the mean of a run and itself is that run (to oof.tsv's rounding)
    for name in ("total/soft", "accuracy/regression", "word/accuracy"):
        assert same["metrics"][name]["pcc"] == pytest.approx(report["metrics"][name]["pcc"], abs=2e-3), name
    assert same["review"]["soft"]["flagged"] == report["review"]["soft"]["flagged"]
    report_main([str(out), str(out), "--ensemble"])
    assert f"mean of {out.name} + {out.name}" in capsys.readouterr().out

    part = tmp_path / "cv-part"  # one fold of the same split: the same held-out speakers, the same predictions
    train_main(["--manifest", str(small_manifest), "--model", tiny_whisper, "--folds", "3", "--run-folds", "1",
                "--epochs", "1", "--batch-size", "8", "--target", "total,accuracy",
                "--cache-dir", str(tmp_path / "cache"),
                "--word-scores", str(speechocean_clips / "words.tsv"), "--word-target", "accuracy,total",
                "--reweight", "0.5", "--out", str(part)])
    part_rows = list(csv.DictReader(open(part / "oof.tsv"), delimiter="\t"))
    assert part_rows == [r for r in rows if r["fold"] == "1"]
    others = restrict(report, read_oof(out), read_oof(out, "oof_words.tsv"), {0, 2})  # joined with that fold
    one = (json.loads((part / "cv.json").read_text()), read_oof(part), read_oof(part, "oof_words.tsv"))
    whole = joined([others, one], "a+b")[0]  # is the full run again
    for name in ("total/soft", "accuracy/regression", "word/accuracy"):
        assert whole["metrics"][name]["pcc"] == pytest.approx(report["metrics"][name]["pcc"], abs=2e-3), name
    assert whole["responses"] == len(responses) and len(whole["bands"]["total/soft"]) == 4
    assert whole["training"]["run_folds"] == [] and joined([one], "b")[0]["training"]["run_folds"] == [1]
    with pytest.raises(SystemExit, match="share folds"):
        report_main([f"{out}+{part}"])

    grader = Grader.load(out / "fold0")
    audio = load_audio(responses[0].audio)
    with_text = grader.grade(audio, responses[0].text).to_dict()
    assert [w["word"] for w in with_text["words"]] == responses[0].text.split()
    assert set(with_text["words"][0]) == {"word", "accuracy", "total"}
    without = grader.grade(audio).to_dict()
    assert without["words"] == [] and "reference text" in without["words_note"]


def test_checkpoint_without_word_heads_still_grades(tiny_checkpoint, speech_clip):
    out = Grader.load(tiny_checkpoint).grade(load_audio(speech_clip), "WE CALL IT BEAR").to_dict()
    assert out["words"] == [] and "no word heads" in out["words_note"] and "total" in out["scores"]


def test_trained_word_scores_agree_with_the_experts(speechocean_dir):
    """The shipped grader's word accuracy against the experts' over 100 clips (every 25th utterance). These clips
    were in its training data: a wiring check that positions and heads line up (a misaligned word head gives
    about zero); the out-of-fold word figures in the model card are the real measure."""
    grader = Grader.load(DEFAULT_CHECKPOINT)
    assert grader.word_aspects, "the shipped grader gives word scores"
    responses = read_manifest(speechocean_dir / "labels.tsv", ["total"])[::25]
    words = read_word_scores(speechocean_dir / "words.tsv", ["accuracy"])
    predictions = grader.grade_batch([load_audio(r.audio) for r in responses], [r.text for r in responses])
    predicted = [w["accuracy"] for p in predictions for w in p.words]
    human = [s for r in responses for s in words[r.utt_id].scores["accuracy"]]
    assert len(responses) == 100 and len(predicted) == len(human)
    assert stats.pearsonr(predicted, human).statistic > 0.3
