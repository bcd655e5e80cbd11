"""The score probe (grader.probe): the encoder's layer summary, the blend moving the distribution with the score, the
command on a real cross-validated run, whose probe the front door then grades through, and the shipped probe against
its committed out-of-fold predictions."""

import json
import shutil

import numpy as np
import pytest
import torch

from grader.audio import load_audio, trim_to_speech
from grader.inference import DEFAULT_CHECKPOINT, Grader, encode_with_summaries
from grader.model import Decoded
from grader.probe import PROBE_FILE, ScoreProbe, fit_blend, main as probe_main
from grader.report import main as report_main, read_oof
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


def probe_of(blend: list[list[float]], features: int = 3) -> ScoreProbe:
    rng = np.random.default_rng(0)
    return ScoreProbe(["total", "fluency"], [0.0] * features, [1.0] * features,
                      rng.normal(0, 1, (2, features)).tolist(), [7.0, 7.0], blend)


def test_the_blend_moves_the_distribution_with_the_score():
    """[1, 0, 0] leaves the grade as it was; otherwise each response's map is members * v + probe * p + c: the
    regression exactly, the soft score (the moved distribution's expectation) away from the scale's ends."""
    values = SCALE.values
    centre = torch.linspace(3, 9, 16)[:, None, None]
    probs = (-(values - centre) ** 2 / 2).expand(16, 2, -1).softmax(-1)
    soft = (probs * values).sum(-1)
    decoded = Decoded(soft + 0.1, probs, values[probs.argmax(-1)], soft)
    summaries = list(torch.as_tensor(np.random.default_rng(1).normal(0, 0.3, (16, 3)), dtype=torch.float32))
    same = probe_of([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).blended(decoded, summaries, SCALE)
    assert torch.allclose(same.probs, probs, atol=1e-6) and torch.allclose(same.soft, soft, atol=1e-5)
    probe = probe_of([[1.0, 0.0, 0.0], [0.5, 0.5, 0.2]])
    moved = probe.blended(decoded, summaries, SCALE)
    p = torch.as_tensor(probe.predict(torch.stack(summaries).numpy()), dtype=torch.float32)
    expected = 0.5 * soft[:, 1] + 0.5 * p[:, 1] + 0.2
    assert torch.allclose(moved.probs.sum(-1), torch.ones(16, 2), atol=1e-5) and (moved.probs >= 0).all()
    assert torch.allclose(moved.soft, (moved.probs * values).sum(-1), atol=1e-5)
    assert torch.allclose(moved.soft[:, 1], expected, atol=1e-4)
    assert torch.allclose(moved.regression[:, 1], SCALE.clamp(0.5 * (soft[:, 1] + 0.1) + 0.5 * p[:, 1] + 0.2))
    assert torch.allclose(moved.soft[:, 0], soft[:, 0], atol=1e-5)
    assert torch.equal(moved.hard, values[moved.probs.argmax(-1)])


def test_the_command_fits_a_probe_that_grading_then_reads(tiny_whisper, tiny_checkpoint, small_manifest, tmp_path,
                                                          capsys):
    """`python -m grader.probe CKPT RUN --manifest --out`: a real three-fold run on 36 clips, the ridge fitted on
    them and a training view of each (encoded and cached on the way), probe.json in the checkpoint, whose stretch
    is dropped and whose id says so; the blended run reads as any other, the stretch refits on it, and the front
    door grades through the probe."""
    from grader.train import main as train_main

    run, checkpoint = tmp_path / "cv", tmp_path / "ckpt"
    cache = str(tmp_path / "cache")
    train_main(["--manifest", str(small_manifest), "--model", tiny_whisper, "--folds", "3", "--epochs", "1",
                "--batch-size", "8", "--target", "total,accuracy,fluency,prosodic", "--cache-dir", cache,
                "--out", str(run)])
    shutil.copytree(tiny_checkpoint, checkpoint)
    before = Grader.load(checkpoint, device="cpu")
    assert before.probe is None
    info = json.loads((checkpoint / "grader.json").read_text())
    (checkpoint / "grader.json").write_text(json.dumps(info | {"stretch": {"of": "tiny", "aspects": {}}}))
    with pytest.raises(SystemExit, match="no cv.json"):  # a folder that is not a cross-validated run
        probe_main([str(checkpoint), str(tmp_path), "--manifest", str(small_manifest), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="cannot fit the probe: manifest not found"):
        probe_main([str(checkpoint), str(run), "--manifest", str(tmp_path / "none.tsv"), "--out", str(tmp_path / "x")])
    probe = probe_main([str(checkpoint), str(run), "--manifest", str(small_manifest), "--out", str(tmp_path / "blend"),
                        "--augment-views", "1", "--cache-dir", cache])
    assert probe.report["responses"] == 36 and probe.report["rows"] == 72
    assert ScoreProbe.load(checkpoint, probe.aspects) == probe
    info = json.loads((checkpoint / "grader.json").read_text())
    assert "stretch" not in info and info["checkpoint_id"] == "tiny+probe"
    rows = read_oof(tmp_path / "blend")
    assert len(rows) == 36 and {r["fold"] for r in rows} == {"0", "1", "2"}
    for row in rows:  # the blended score is the members' and the probe's, by weights fitted on the other folds
        assert float(row["total_soft"]) != pytest.approx(float(row["total_members"]))
    capsys.readouterr()
    report_main([str(tmp_path / "blend"), "--stretch", "0.5"])
    assert "blend stretched 0.5" in capsys.readouterr().out
    stretch_main([str(checkpoint), str(tmp_path / "blend")])
    grader = Grader.load(checkpoint, device="cpu")
    assert grader.probe == probe and grader.checkpoint_id == "tiny+probe-stretch0.5"
    a = grader.assess(small_manifest.parent / "audio" / "000010011.flac", "WE CALL IT BEAR")
    s = a.prediction.scores["fluency"]
    assert a.to_dict()["blended"] == probe.blended_aspects == probe.aspects  # the command blends every aspect unasked
    assert s.soft == pytest.approx(float(np.dot(s.probs, SCALE.values.numpy())), abs=1e-4)
    b = before.assess(small_manifest.parent / "audio" / "000010011.flac", "WE CALL IT BEAR")
    assert s.soft != pytest.approx(b.prediction.scores["fluency"].soft, abs=1e-3)
    (checkpoint / PROBE_FILE).write_text(json.dumps(json.loads((checkpoint / PROBE_FILE).read_text())
                                                    | {"aspects": ["total"]}))
    with pytest.raises(ValueError, match="scores"):
        Grader.load(checkpoint, device="cpu")



def test_the_shipped_blend_is_fitted_on_its_committed_out_of_fold_predictions():
    """The shipped probe blends fluency and prosodic (total and accuracy keep the members' scores); its blend,
    refitted by least squares on the committed blended run's members' and probe's out-of-fold scores, is the blend
    it ships, and out of fold it agrees with the experts better than the members alone on both; the stretch is
    fitted on that run."""
    info = json.loads((DEFAULT_CHECKPOINT / "grader.json").read_text())
    probe = Grader.load(device="cpu").probe
    assert probe is not None and info["checkpoint_id"].endswith("+probe-stretch0.5")
    run = DEFAULT_CHECKPOINT / "cv" / info["stretch"]["fitted_on"][0]
    rows = read_oof(run)
    assert len(rows) == 2500
    for a, aspect in enumerate(probe.aspects):
        get = lambda key: np.array([float(r[key]) for r in rows])  # noqa: E731
        if aspect in ("total", "accuracy"):
            assert probe.blend[a] == [1.0, 0.0, 0.0]
            continue
        assert fit_blend(get(f"{aspect}_members"), get(f"{aspect}_probe"), get(aspect)) == pytest.approx(
            probe.blend[a], abs=1e-6)
        figures = probe.report["out_of_fold_pcc"][aspect]
        assert figures["soft"] > figures["members"] + 0.001
