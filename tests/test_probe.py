"""The score probe (grader.probe): the encoder's layer summary, the blend moving the distribution with the score, the
command on a real cross-validated run, whose probe the front door then grades through, and the shipped probe against
its committed out-of-fold predictions."""

import json

import numpy as np
import pytest
import torch

from grader.audio import load_audio, trim_to_speech
from grader.inference import DEFAULT_CHECKPOINT, Grader, encode_with_summaries
from grader.model import Decoded
from grader.probe import (ALPHAS, BLEND_INPUTS, PROBE_FILE, TEXT_COLUMNS, ScoreProbe, choose_penalties, fit_blend,
                          main as probe_main)
from grader.reference import ReferenceMatch
from grader.report import load_run, main as report_main, read_oof
from grader.scale import get_scale
from grader.stretch import main as stretch_main

SCALE = get_scale("speechocean762")


@pytest.fixture(scope="module")
def shipped() -> Grader:
    return Grader.load(device="cpu")


def test_a_clips_summary_is_its_own_whatever_its_batch(shipped, speechocean_clips):
    """Every encoder layer's mean and spread over the clip's own frames: the same alone and beside a longer clip
    (the padding is left out), and its last layer's mean is the mean of the states the members read."""
    short, long_ = (trim_to_speech(load_audio(speechocean_clips / "audio" / name))
                    for name in ("000010011.flac", "096340009.flac"))
    assert len(long_) > len(short)
    alone_states, alone = encode_with_summaries(shipped.model, [short])
    _, batched = encode_with_summaries(shipped.model, [short, long_])
    d, layers = shipped.model.backbone.model.config.d_model, shipped.model.backbone.model.config.encoder_layers
    assert alone[0].shape == (2 * d * (layers + 1),)
    assert torch.allclose(alone[0], batched[0], atol=1e-3)
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)
    assert torch.allclose(alone[0][-2 * d: -d], alone_states[0].float().mean(0), atol=1e-4)


def probe_of(blend: list[list[float]], without_words: list[list[float]], features: int = 3) -> ScoreProbe:
    rng = np.random.default_rng(0)
    return ScoreProbe(["total", "fluency"], [0.0] * features, [1.0] * features,
                      rng.normal(0, 1, (2, features)).tolist(), [7.0, 7.0], blend, without_words, ["accuracy", "total"])


def test_the_blend_moves_the_distribution_with_the_score():
    """[1, 0, ..., 0] leaves the grade as it was; otherwise each response's map is members * v + probe * p + the text
    terms by their weights (lowest and mean word accuracy, mean and lowest word gain clipped to GAIN_RANGE, share of
    words found) + c: the regression exactly, the soft score (the moved distribution's expectation) away from the
    scale's ends; a response without word scores or without a reference check takes the blend without them."""
    values = SCALE.values
    centre = torch.linspace(3, 9, 16)[:, None, None]
    probs = (-(values - centre) ** 2 / 2).expand(16, 2, -1).softmax(-1)
    soft = (probs * values).sum(-1)
    words = [torch.tensor([[9.0, 9.5], [4.0 + i / 4, 5.0], [8.0, 8.0]]) for i in range(12)] + [None] * 4
    references = [ReferenceMatch(3, 2, (4.0, 1.0 - i, 20.0)) for i in range(10)] + [None] * 6
    decoded = Decoded(soft + 0.1, probs, values[probs.argmax(-1)], soft, words)
    summaries = list(torch.as_tensor(np.random.default_rng(1).normal(0, 0.3, (16, 3)), dtype=torch.float32))
    keep = [[1.0] + [0.0] * (len(BLEND_INPUTS) - 1)] * 2
    same = probe_of(keep, keep).blended(decoded, summaries, SCALE, references)
    assert torch.allclose(same.probs, probs, atol=1e-6) and torch.allclose(same.soft, soft, atol=1e-5)
    probe = probe_of([keep[0], [0.4, 0.3, 0.2, 0.1, 0.05, 0.02, 0.5, -0.5]],
                     [keep[0], [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2]])
    moved = probe.blended(decoded, summaries, SCALE, references)
    p = torch.as_tensor(probe.predict(torch.stack(summaries).numpy()), dtype=torch.float32)
    lowest = torch.tensor([4.0 + i / 4 for i in range(10)])
    mean = (9.0 + lowest + 8.0) / 3
    gains = torch.tensor([[4.0, max(1.0 - i, -5.0), 15.0] for i in range(10)])  # clipped to GAIN_RANGE, -5 to 15
    text = 0.2 * lowest + 0.1 * mean + 0.05 * gains.mean(1) + 0.02 * gains.min(1).values + 0.5 * (2 / 3)
    expected = torch.cat([0.4 * soft[:10, 1] + 0.3 * p[:10, 1] + text - 0.5,
                          0.5 * soft[10:, 1] + 0.5 * p[10:, 1] + 0.2])
    assert torch.allclose(moved.probs.sum(-1), torch.ones(16, 2), atol=1e-5) and (moved.probs >= 0).all()
    assert torch.allclose(moved.soft, (moved.probs * values).sum(-1), atol=1e-5)
    assert torch.allclose(moved.soft[:, 1], expected, atol=1e-4)
    regression = torch.cat([0.4 * (soft[:10, 1] + 0.1) + 0.3 * p[:10, 1] + text - 0.5,
                            0.5 * (soft[10:, 1] + 0.1) + 0.5 * p[10:, 1] + 0.2])
    assert torch.allclose(moved.regression[:, 1], SCALE.clamp(regression), atol=1e-5)
    assert torch.allclose(moved.soft[:, 0], soft[:, 0], atol=1e-5)
    assert torch.equal(moved.hard, values[moved.probs.argmax(-1)])
    assert probe.blended_aspects(words[0], references[0]) == probe.blended_aspects(None, None) == ["fluency"]
    assert probe.reads_text(words[0], references[0]) and not probe.reads_text(words[0], None)


def test_the_ridge_penalty_is_chosen_on_held_out_speakers():
    """Each speaker's answers share what the encoder hears of the speaker and what the experts think of them: a
    penalty chosen over rows would find each answer's twins in the fit and choose the weakest. Chosen on held-out
    speakers, a target the features tell nothing about gets the strongest penalty, one they tell gets a weaker, and
    every penalty's held-out predictions are sklearn Ridge's."""
    from sklearn.linear_model import Ridge, RidgeCV

    rng = np.random.default_rng(0)
    speakers, answers, dim = 60, 5, 40
    voice, opinion = rng.normal(size=(speakers, dim)), rng.normal(size=speakers)  # per speaker
    weights = rng.normal(size=dim)
    who = np.repeat(np.arange(speakers), answers)
    features = voice[who] + 0.1 * rng.normal(size=(len(who), dim))
    targets = np.column_stack([opinion[who], features @ weights + rng.normal(size=len(who))])
    clean, groups = np.ones(len(who), bool), who % 4
    chosen = choose_penalties(features, targets, clean, groups)
    assert chosen[0] == max(ALPHAS) and chosen[1] < max(ALPHAS) / 100
    assert RidgeCV(alphas=ALPHAS).fit(features, targets[:, 0]).alpha_ == min(ALPHAS)  # leave-one-out over rows
    errors = np.zeros((len(ALPHAS), 2))  # the same choice, made with sklearn's Ridge fitted for every penalty
    for g in range(4):
        fit, test = groups != g, groups == g
        mean, scale = features[fit].mean(0), features[fit].std(0) + 1e-6
        for i, alpha in enumerate(ALPHAS):
            ridge = Ridge(alpha=alpha).fit((features[fit] - mean) / scale, targets[fit])
            errors[i] += ((ridge.predict((features[test] - mean) / scale) - targets[test]) ** 2).sum(0)
    assert list(chosen) == [ALPHAS[i] for i in errors.argmin(0)]


def test_the_command_fits_a_probe_that_grading_then_reads(tiny_whisper, small_manifest, tmp_path, capsys):
    """`python -m grader.probe CKPT RUN --manifest --out`: a real three-fold run with word heads on 36 clips, the
    ridge fitted on them and a training view of each (encoded and cached on the way), probe.json in the checkpoint,
    whose stretch is dropped and whose id says so; the blended run reads as any other, the stretch refits on it, and
    the front door grades through the probe, with the word scores where the answer has a reference text."""
    from grader.train import main as train_main

    run, checkpoint = tmp_path / "cv", tmp_path / "ckpt"
    cache, clip = str(tmp_path / "cache"), small_manifest.parent / "audio" / "000010011.flac"
    recipe = ["--manifest", str(small_manifest), "--model", tiny_whisper, "--epochs", "1", "--batch-size", "8",
              "--target", "total,accuracy,fluency,prosodic", "--word-scores",
              str(small_manifest.parent / "words.tsv"), "--word-target", "accuracy,total", "--cache-dir", cache]
    train_main([*recipe, "--folds", "3", "--out", str(run)])
    train_main([*recipe, "--dev-speakers", "3", "--out", str(checkpoint)])
    before = Grader.load(checkpoint, device="cpu")
    assert before.probe is None
    info = json.loads((checkpoint / "grader.json").read_text())
    (checkpoint / "grader.json").write_text(json.dumps(info | {"stretch": {"of": "tiny", "aspects": {}}}))
    with pytest.raises(SystemExit, match="no cv.json"):  # a folder that is not a cross-validated run
        probe_main([str(checkpoint), str(tmp_path), "--manifest", str(small_manifest), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="cannot fit the probe: manifest not found"):
        probe_main([str(checkpoint), str(run), "--manifest", str(tmp_path / "none.tsv"), "--out", str(tmp_path / "x")])
    probe = probe_main([str(checkpoint), str(run), "--manifest", str(small_manifest), "--out", str(tmp_path / "blend"),
                        "--augment-views", "1", "--aspects-without-words", "fluency", "--cache-dir", cache])
    assert probe.report["responses"] == 36 and probe.report["rows"] == 72 and probe.report["word_scores"]
    assert probe.word_aspects == ["accuracy", "total"]
    assert ScoreProbe.load(checkpoint, probe.aspects, probe.word_aspects) == probe
    info = json.loads((checkpoint / "grader.json").read_text())
    assert "stretch" not in info and info["checkpoint_id"] == "tiny+probe-text"
    unstretched = Grader.load(checkpoint, device="cpu").assess(clip).prediction.scores
    assert unstretched["total"].soft == pytest.approx(before.assess(clip).prediction.scores["total"].soft, abs=1e-5)
    assert unstretched["fluency"].soft != pytest.approx(before.assess(clip).prediction.scores["fluency"].soft, abs=1e-3)
    rows = read_oof(tmp_path / "blend")
    assert len(rows) == 36 and {r["fold"] for r in rows} == {"0", "1", "2"}
    for row in rows:  # the blended score is the members', the probe's and the words', weights fitted on other folds
        assert float(row["total_soft"]) != pytest.approx(float(row["total_members"]))
    capsys.readouterr()
    report_main([str(tmp_path / "blend"), "--stretch", "0.5"])
    assert "blend stretched 0.5" in capsys.readouterr().out
    stretch_main([str(checkpoint), str(tmp_path / "blend")])
    grader = Grader.load(checkpoint, device="cpu")
    assert grader.probe == probe and grader.checkpoint_id.startswith("tiny+probe-text-stretch0.5@")
    a, b = grader.assess(clip, "WE CALL IT BEAR"), before.assess(clip, "WE CALL IT BEAR")
    s = a.prediction.scores["fluency"]
    words = torch.tensor([[w["accuracy"], w["total"]] for w in a.prediction.words])
    heard = ReferenceMatch(4, 4, (5.0, 6.0, 4.0, 7.0))  # as if the check had found every word
    assert probe.blended_aspects(words, heard) == probe.aspects and probe.reads_text(words, heard)  # every aspect
    # a random Whisper hears none of the text: an answer that does not read it, blended without its word scores
    assert a.reference.mismatch and a.to_dict()["blended"] == ["fluency"] and not a.to_dict()["blended_text"]
    assert s.soft == pytest.approx(float(np.dot(s.probs, SCALE.values.numpy())), abs=1e-4)
    assert s.soft != pytest.approx(b.prediction.scores["fluency"].soft, abs=1e-3)
    textless = grader.assess(clip).prediction  # no reference text: no word scores, the blend without them
    assert textless.blended == ["fluency"] and not textless.blended_text
    held_out = probe_main([str(checkpoint), str(run), "--manifest", str(small_manifest), "--out", str(tmp_path / "b0"),
                           "--augment-views", "1", "--exclude-fold", "0", "--cache-dir", cache])
    assert held_out.report["responses"] == sum(r["fold"] != "0" for r in rows) < 36  # fitted without fold 0
    assert held_out.blend != probe.blend and len(read_oof(tmp_path / "b0")) == 36
    raters = small_manifest.parent / "raters.tsv"  # the ridge fitted on the experts' mean scores, not their median
    fair = probe_main([str(checkpoint), str(run), "--manifest", str(small_manifest), "--out", str(tmp_path / "r"),
                       "--augment-views", "1", "--rater-scores", str(raters), "--cache-dir", cache])
    assert fair.report["options"]["rater_scores"] == str(raters) and fair.coef != probe.coef
    assert fair.mean == probe.mean and len(fair.report["fold_alphas"]) == 3
    lines = raters.read_text().splitlines()
    (tmp_path / "some.tsv").write_text("\n".join(lines[:-5]) + "\n")  # the last response's raters missing
    with pytest.raises(SystemExit, match="cannot fit the probe: .*has no scores for 1 responses"):
        probe_main([str(checkpoint), str(run), "--manifest", str(small_manifest), "--out", str(tmp_path / "x"),
                    "--rater-scores", str(tmp_path / "some.tsv"), "--cache-dir", cache])
    for field, value in (("aspects", ["total"]), ("word_aspects", ["total"])):  # a probe that does not fit
        saved = json.loads((checkpoint / PROBE_FILE).read_text())
        (checkpoint / PROBE_FILE).write_text(json.dumps(saved | {field: value}))
        with pytest.raises(ValueError, match="scores|word scores"):
            Grader.load(checkpoint, device="cpu")
        (checkpoint / PROBE_FILE).write_text(json.dumps(saved))


def test_the_shipped_blend_is_fitted_on_its_committed_out_of_fold_predictions():
    """The shipped probe blends every aspect with the text terms (the members' word accuracy, the reference check's
    word gains), and without them (no reference text) blends fluency and prosodic with the probe alone; its blends,
    refitted by least squares on the committed blended run's members', probe's and text terms' out-of-fold columns,
    are the blends it ships, and out of fold the blend agrees with the experts better than the members alone on
    every aspect and every fold; the stretch is fitted on that run."""
    info = json.loads((DEFAULT_CHECKPOINT / "grader.json").read_text())
    probe = Grader.load(device="cpu").probe
    assert probe is not None and info["checkpoint_id"].endswith("+probe-text-stretch0.5")
    _, rows, _ = load_run(DEFAULT_CHECKPOINT / "cv" / info["stretch"]["fitted_on"][0])
    assert len(rows) == 2500 and probe.report["word_scores"]
    text = np.array([[float(r[c]) for c in TEXT_COLUMNS] for r in rows])
    for a, aspect in enumerate(probe.aspects):
        get = lambda key: np.array([float(r[key]) for r in rows])  # noqa: E731
        members, own, human = get(f"{aspect}_members"), get(f"{aspect}_probe"), get(aspect)
        assert fit_blend(members, own, human, text) == pytest.approx(probe.blend[a], abs=1e-6)
        keep = [1.0] + [0.0] * (len(BLEND_INPUTS) - 1)
        without = keep if aspect in ("total", "accuracy") else fit_blend(members, own, human, None)
        assert probe.blend_without_words[a] == pytest.approx(without, abs=1e-6)
        figures = probe.report["out_of_fold_pcc"][aspect]
        assert figures["soft"] > figures["members"] + 0.005
        assert all(s > m for s, m in zip(figures["folds"]["soft"], figures["folds"]["members"]))


def test_an_answer_to_another_sentence_is_blended_without_its_word_scores(shipped, speechocean_clips):
    """The word scores of words the audio does not support are no scores of spoken words: an answer the reference
    check finds does not read its text is blended as one without word scores (total and accuracy: the members'
    scores, which they were taught to put at the bottom), while its own text blends every aspect with them."""
    clip = speechocean_clips / "audio" / "000010011.flac"
    own, other = (shipped.assess(clip, text) for text in ("WE CALL IT BEAR", "THERE IS A GREEN CAR NEAR THE STATION"))
    assert not own.reference.mismatch and own.prediction.blended_text
    assert own.prediction.blended == ["total", "accuracy", "fluency", "prosodic"]
    assert other.reference.mismatch and not other.prediction.blended_text
    assert other.prediction.blended == ["fluency", "prosodic"] and other.prediction.words  # still shown, not read
    assert other.prediction.scores["total"].soft < 1.0 < 8.0 < own.prediction.scores["total"].soft
    assert other.timings["reference"] > 0 and set(other.timings) == {"decode_gate", "model", "reference"}
