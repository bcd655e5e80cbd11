"""Training augmentation (grader.augment) on real clips: the same seed gives the same recording, every channel keeps
the answer's length and level sane, and training on cached augmented views runs with a tiny random Whisper."""

import json
import random

import numpy as np
import pytest
import torch

from grader.audio import SAMPLE_RATE, load_audio, trim_to_speech
from grader.augment import CHANNELS, augment, room_tone
from grader.data import read_manifest
from grader.backbones import BackboneConfig
from grader.model import GraderModel, HeadOutput, ModelConfig, consistency_loss
from grader.scale import get_scale
from grader.train import Examples, batch_audio, train_step
from grader.train import main as train_main


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def test_augmentations_are_deterministic_and_keep_the_answer(speech_clip):
    clean = load_audio(speech_clip)
    for seed, channel in enumerate(CHANNELS * 3):  # every channel, three random settings each
        once, again = (augment(clean, np.random.default_rng([0, seed]), channel) for _ in range(2))
        assert np.array_equal(once, again), seed
        assert once.dtype == np.float32 and np.all(np.isfinite(once)) and np.abs(once).max() <= 1.0
        # at most 4.5 s of room tone added (and a codec's few ms of padding); never shorter than the answer
        assert len(clean) <= len(once) <= len(clean) + 4.6 * SAMPLE_RATE, (seed, len(once))
        # gain -20..0 dB; the room tone around it lowers the RMS by the share of silence at most
        share = len(clean) / len(once)
        assert 0.1 * 0.5 * np.sqrt(share) < rms(once) / rms(clean) < 1.5, seed
        assert not np.array_equal(once[: len(clean)], clean)
    with pytest.raises(ValueError, match="channel must be one of"):
        augment(clean, np.random.default_rng(0), "underwater")
    assert not np.array_equal(augment(clean, np.random.default_rng([0, 1])),
                              augment(clean, np.random.default_rng([1, 1])))


def test_the_trim_removes_added_room_tone(speech_clip):
    """Training trims the augmented recording as the app trims an upload: 2 s of room tone before and 1 s after
    barely change what the model hears."""
    clean = load_audio(speech_clip)
    padded = room_tone(clean, np.random.default_rng(0), 2.0, 1.0)
    assert abs(len(trim_to_speech(padded)) - len(trim_to_speech(clean))) < 0.1 * SAMPLE_RATE


def test_each_epoch_draws_clean_or_augmented_views():
    clean = [torch.zeros(3, 2) for _ in range(50)]
    views = [[torch.ones(4, 2)] for _ in range(50)]
    examples = Examples([None] * 50, [np.zeros(1)] * 50, clean, [None] * 50, views)
    drawn = examples.epoch_inputs(random.Random(0))
    assert {len(s) for s in drawn} == {3, 4}  # both kinds, about half each
    assert 10 < sum(len(s) == 4 for s in drawn) < 40
    assert [len(s) for s in examples.take([0, 1]).epoch_inputs(random.Random(0))] == [len(s) for s in drawn[:2]]
    assert Examples([None], [np.zeros(1)], clean[:1], [None]).epoch_inputs(random.Random(0)) is not None


def test_training_with_augmented_views_runs(tiny_whisper, small_manifest, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "run"
    args = ["--manifest", str(small_manifest), "--model", tiny_whisper, "--limit", "12", "--dev-speakers", "1",
            "--epochs", "2", "--batch-size", "4", "--target", "total,accuracy", "--augment-views", "1",
            "--cache-dir", str(cache), "--out", str(out)]
    train_main(args)
    info = json.loads((out / "grader.json").read_text())
    assert info["training"]["augment_views"] == 1 and (out / "weights.safetensors").is_file()
    store = torch.load(next(cache.glob("encoder-*.pt")))
    responses = read_manifest(small_manifest, ["total"])[:12]
    augmented = {k: v for k, v in store.items() if "#augment0.0" in k}
    assert len(store) == 24 and len(augmented) == 12  # each clip clean and one augmented view
    for r in responses:
        clean = next(v for k, v in store.items() if k.startswith(f"{r.audio.resolve()}#") and "#augment" not in k)
        view = next(v for k, v in augmented.items() if k.startswith(f"{r.audio.resolve()}#"))
        assert clean.shape[1] == view.shape[1] and not (clean.shape == view.shape and torch.equal(clean, view))
    before = {k: v.clone() for k, v in store.items()}
    # a rerun, with another pooling (it acts after the encoder), reads every view from the same cache
    train_main(args[:-2] + ["--pooling", "last+mean", "--out", str(tmp_path / "again")])
    assert len(list(cache.glob("encoder-*.pt"))) == 1
    after = torch.load(next(cache.glob("encoder-*.pt")))
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_consistency_moves_only_the_perturbed_scores():
    scale = get_scale("speechocean762")
    clean = torch.tensor([[6.0], [8.0]])
    logits = torch.randn(2, 1, scale.num_classes)
    same = HeadOutput(torch.cat([clean, clean]), torch.cat([logits, logits]))
    assert consistency_loss(same, scale).item() == 0.0
    regression = torch.cat([clean, clean + torch.tensor([[1.0], [0.0]])]).requires_grad_()
    moved = HeadOutput(regression, torch.cat([logits, logits]))
    loss = consistency_loss(moved, scale)
    assert loss.item() == pytest.approx(0.5)  # one response of two moved by one step; the soft scores agree
    loss.backward()
    assert torch.all(regression.grad[:2] == 0) and regression.grad[2, 0] > 0  # the clean half is held fixed


def test_with_consistency_the_labels_teach_only_the_clean_half(tiny_whisper, small_manifest):
    """Paired with its own copy as the "perturbed" view (no change: no consistency term), a batch's loss is the
    clean batch's alone: the labels never reach the perturbed half, which learns only to score as its clean twin."""
    responses = read_manifest(small_manifest, ["total"])[:4]
    model = GraderModel(ModelConfig(backbone=BackboneConfig("whisper", tiny_whisper), head_dropout=0.0))
    model.eval()  # no dropout: both halves see the same network
    audio = [load_audio(r.audio) for r in responses]
    prompts, targets = [r.text for r in responses], torch.tensor([[r.scores["total"]] for r in responses])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    clean = train_step(model, batch_audio(model, audio), prompts, targets, optimizer, "fa+reg")
    paired = train_step(model, batch_audio(model, audio + audio), prompts * 2, torch.cat([targets, targets + 3]),
                        optimizer, "fa+reg", consistency=1.0)
    assert paired == pytest.approx(clean, rel=1e-4)  # the perturbed half's (wrong) labels count for nothing


@pytest.mark.parametrize("scope", ["text", "all"])
def test_training_with_consistency_runs(scope, tiny_whisper, small_manifest, tmp_path, capsys):
    """With the encoder frozen the views are cached encoder outputs; with LoRA on it (scope all) they are
    recordings, encoded afresh every step."""
    out = tmp_path / "run"
    train_main(["--manifest", str(small_manifest), "--model", tiny_whisper, "--limit", "8", "--dev-speakers", "1",
                "--epochs", "1", "--batch-size", "4", "--target", "total", "--augment-views", "2",
                "--consistency", "1", "--lora-scope", scope, "--cache-dir", str(tmp_path / "cache"),
                "--out", str(out)])
    info = json.loads((out / "grader.json").read_text())
    assert info["training"]["consistency"] == 1 and info["dev_metrics"]
    assert (scope == "text") == any((tmp_path / "cache").glob("encoder-*.pt"))
    with pytest.raises(SystemExit):  # refused with the reason, before any work
        train_main(["--manifest", str(small_manifest), "--consistency", "1"])
    assert "needs --augment-views" in capsys.readouterr().err
