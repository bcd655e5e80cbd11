"""The stretch (grader.stretch): its fit, the distribution moving with the score, and a real checkpoint graded
through the front door before and after `python -m grader.stretch` writes its maps."""

import json
import shutil

import numpy as np
import pytest
import torch

from grader.inference import DEFAULT_CHECKPOINT, Grader
from grader.model import Decoded, checkpoint_fingerprint
from grader.scale import get_scale
from grader.report import oof_figures, read_oof
from grader.stretch import Stretch, fit_stretch, main as stretch_main, stretch_decoded, stretch_scores, write_stretch

SCALE = get_scale("speechocean762")


def test_fit_goes_the_asked_share_of_the_way_to_the_experts_spread():
    rng = np.random.default_rng(0)
    human = rng.normal(7.0, 2.0, 2000)
    predicted = 7.3 + 0.6 * (human - 7.0) + rng.normal(0, 0.5, 2000)  # pulled toward the middle
    assert fit_stretch(predicted, human, 0.0) == Stretch(predicted.mean(), predicted.mean(), 1.0)
    full = fit_stretch(predicted, human, 1.0)
    assert full(predicted).mean() == pytest.approx(human.mean()) and full(predicted).std() == pytest.approx(human.std())
    half = fit_stretch(predicted, human, 0.5)
    assert half.slope == pytest.approx((1 + full.slope) / 2) and predicted.std() < half(predicted).std() < human.std()
    assert np.corrcoef(half(predicted), human)[0, 1] == pytest.approx(np.corrcoef(predicted, human)[0, 1])
    with pytest.raises(ValueError, match="strength"):
        fit_stretch(predicted, human, 1.5)
    with pytest.raises(ValueError, match="slope"):
        Stretch(7.0, 7.0, 0.0)


def test_the_distribution_moves_with_the_score():
    """The moved distribution is a distribution, the soft score its expectation, and that within a few hundredths
    of the map of the soft score (as the out-of-fold report maps it) away from the scale's ends; the order of the
    answers is kept."""
    values = SCALE.values
    centre, width = torch.linspace(2, 10, 64)[:, None, None], torch.linspace(0.6, 1.5, 64).flip(0)[:, None, None]
    probs = (-(values - centre) ** 2 / (2 * width ** 2)).expand(64, 2, -1).softmax(-1)  # peaked, as a grader's are
    soft = (probs * values).sum(-1)
    decoded = Decoded(soft.clone(), probs, values[probs.argmax(-1)], soft)
    stretches = [Stretch(7.4, 7.2, 1.15), Stretch(7.0, 7.0, 1.0)]
    moved = stretch_decoded(decoded, stretches, SCALE)
    assert torch.allclose(moved.probs.sum(-1), torch.ones(64, 2), atol=1e-5) and (moved.probs >= 0).all()
    assert torch.equal(moved.hard, values[moved.probs.argmax(-1)])
    assert torch.allclose(moved.soft[:, 1], soft[:, 1], atol=1e-5)  # slope 1, no shift: nothing moves
    assert torch.allclose(moved.probs[:, 1], probs[:, 1], atol=1e-6)
    assert torch.allclose(moved.soft, (moved.probs * values).sum(-1))
    mapped = torch.as_tensor(stretch_scores(soft[:, 0].numpy(), stretches[0], SCALE), dtype=torch.float32)
    inside = (mapped > 3) & (mapped < 9)
    assert inside.sum() > 30 and torch.allclose(moved.soft[inside, 0], mapped[inside], atol=0.05)
    order = soft[:, 0].argsort()
    assert (moved.soft[order, 0].diff() >= -1e-5).all()
    assert torch.allclose(moved.regression[:, 0], SCALE.clamp(7.2 + 1.15 * (soft[:, 0] - 7.4)))


def test_a_stretched_checkpoint_grades_real_speech_further_from_the_middle(tmp_path, speechocean_clips):
    """The shipped grader's maps written afresh from an out-of-fold table of its own scores on the bundled clips:
    the front door then grades every clip by the map, each distribution's expectation is its soft score, and the
    weakest answer scores lower than before."""
    lines = (speechocean_clips / "labels.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    labels = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    paths, texts = [speechocean_clips / r["audio"] for r in labels], [r["text"] for r in labels]
    checkpoint = tmp_path / "grader"
    shutil.copytree(DEFAULT_CHECKPOINT, checkpoint)
    info = json.loads((checkpoint / "grader.json").read_text())
    info.pop("stretch", None)
    (checkpoint / "grader.json").write_text(json.dumps(info))
    plain = Grader.load(checkpoint, device="cpu")
    before = plain.assess_batch(paths, texts)
    aspects = plain.aspects
    run = tmp_path / "cv"
    run.mkdir()
    with open(run / "oof.tsv", "w") as f:  # oof.tsv's columns, as grader.train --folds writes them
        f.write("\t".join(["utt_id", "speaker", "fold", *[f"{a}{s}" for a in aspects for s in
                                                            ("", "_regression", "_soft", "_hard")], "review"]) + "\n")
        for i, (row, a) in enumerate(zip(labels, before)):  # two folds, alternate rows
            scores = a.prediction.scores
            f.write("\t".join([row["utt_id"], row["speaker"], str(i % 2), *[str(x) for k in aspects for x in (
                row[k], scores[k].regression, scores[k].soft, scores[k].hard)], ""]) + "\n")
    stretch_main([str(checkpoint), str(run), "--strength", "1"])
    stretched = Grader.load(checkpoint, device="cpu")
    maps = stretched.stretches
    assert len(maps) == len(aspects) and maps[0].slope > 1
    name, fingerprint = stretched.checkpoint_id.split("@")  # stored with every grade: the recipe, and its files
    assert name == f"{plain.info['checkpoint_id']}-stretch1" and fingerprint == checkpoint_fingerprint(checkpoint)
    stretch_main([str(checkpoint), str(run), "--strength", "0.5"])  # fitted afresh, not stretched twice
    assert Grader.load(checkpoint, device="cpu").checkpoint_id.startswith(f"{plain.info['checkpoint_id']}-stretch0.5@")
    stretch_main([str(checkpoint), str(run), "--strength", "1"])
    assert checkpoint_fingerprint(checkpoint) == fingerprint  # the same files, the same grader
    rows = (run / "oof.tsv").read_text().splitlines()
    halves = [tmp_path / "cv-a", tmp_path / "cv-b"]  # the same rows as two runs of one fold each, joined by "+"
    for k, half in enumerate(halves):
        half.mkdir()
        (half / "oof.tsv").write_text("\n".join([rows[0], *rows[1 + k::2]]) + "\n")
    joined = tmp_path / "joined"
    shutil.copytree(checkpoint, joined)
    stretch_main([str(joined), f"{halves[0]}+{halves[1]}", "--strength", "1"])
    fitted = [json.loads((c / "grader.json").read_text())["stretch"] for c in (checkpoint, joined)]
    assert fitted[1]["fitted_on"] == ["cv-a+cv-b"] and fitted[1]["responses"] == len(labels)
    for aspect, fit in fitted[0]["aspects"].items():
        assert fitted[1]["aspects"][aspect] == pytest.approx(fit)
    assert checkpoint_fingerprint(joined) != fingerprint  # one name (the recipe), fitted on other files: another id
    with pytest.raises(SystemExit, match="share folds"):
        stretch_main([str(joined), f"{halves[0]}+{halves[0]}"])
    after = stretched.assess_batch(paths, texts)
    assert after[0].to_dict()["stretch"] == 1 and "stretch" not in before[0].to_dict()
    for b, a in zip(before, after):
        for k, aspect in enumerate(aspects):
            s, was = a.prediction.scores[aspect], b.prediction.scores[aspect]
            assert s.soft == pytest.approx(float(np.dot(s.probs, SCALE.values.numpy())), abs=1e-4)
            assert s.regression == pytest.approx(float(stretch_scores(was.regression, maps[k], SCALE)), abs=1e-4)
            mapped = float(stretch_scores(was.soft, maps[k], SCALE))  # what the out-of-fold report gives
            # equal but for the mass the map sends past the scale's ends, which stays at the end
            line = maps[k](SCALE.values.numpy())
            past = float(np.dot(was.probs, np.maximum(line - SCALE.max, 0) + np.maximum(SCALE.min - line, 0)))
            assert abs(s.soft - mapped) <= 1e-3 + 2 * past, (aspect, s.soft, mapped, past)
    totals = np.array([[b.prediction.scores["total"].soft, a.prediction.scores["total"].soft]
                       for b, a in zip(before, after)])
    weakest = totals[:, 0].argmin()
    assert totals[weakest, 1] < totals[weakest, 0]
    assert np.std(totals[:, 1]) > np.std(totals[:, 0])
    assert np.std(totals[:, 1]) == pytest.approx(np.std([float(r["total"]) for r in labels]), rel=0.1)


def test_the_shipped_stretch_is_fitted_on_its_committed_out_of_fold_predictions(tmp_path):
    """checkpoints/default/cv holds the out-of-fold predictions of the shipped recipes (train.sh copies them there):
    fitting the stretch on them again gives the shipped maps, and they cover every train utterance once, each
    scored by a model of another fold, so the model card's figures can be remade from them without training."""
    info = json.loads((DEFAULT_CHECKPOINT / "grader.json").read_text())
    shutil.copyfile(DEFAULT_CHECKPOINT / "grader.json", tmp_path / "grader.json")
    runs = [DEFAULT_CHECKPOINT / "cv" / name for name in info["stretch"]["fitted_on"]]
    refit = write_stretch(tmp_path, runs, info["stretch"]["strength"])
    assert refit["fitted_on"] == info["stretch"]["fitted_on"] and refit["responses"] == 2500
    for aspect, fitted in info["stretch"]["aspects"].items():
        assert refit["aspects"][aspect] == pytest.approx(fitted)
    for run in runs:
        rows = read_oof(run)
        assert len({r["utt_id"] for r in rows}) == 2500 and {r["fold"] for r in rows} == {"0", "1", "2", "3", "4"}
        speakers_folds = {(r["speaker"], r["fold"]) for r in rows}
        assert len(speakers_folds) == len({r["speaker"] for r in rows}) == 125  # a speaker in one fold only
        report = json.loads((run / "cv.json").read_text())
        figures = oof_figures(report, rows, read_oof(run, "oof_words.tsv"), ["soft"])
        for name in ("total/soft", "accuracy/soft", "word/accuracy"):  # its report was made of these rows (as written)
            assert figures["metrics"][name]["pcc"] == pytest.approx(report["metrics"][name]["pcc"], abs=1e-4)
        assert figures["metrics"]["total/soft"]["pcc"] > 0.8  # a trained grader, not noise
