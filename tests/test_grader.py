"""The grader on tiny random-config backbones (real transformers models, real audio, real training)."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from grader.audio import load_audio
from grader.backbones import BackboneConfig
from grader.data import (ManifestError, length_batches, read_manifest, read_rater_means, read_speak_and_improve,
                         split_by_speaker)
from grader.evaluate import main as evaluate_main
from grader.inference import Grader, native_bf16
from grader.model import GraderModel, LoraOptions, ModelConfig, decode, parse_objective, score_loss
from grader.train import TrainConfig, load_responses
from grader.train import main as train_main


def overfit(backbone: BackboneConfig, manifest, scope: str = "text", objective: str = "fa+reg", steps: int = 25):
    torch.manual_seed(0)
    model = GraderModel(ModelConfig(backbone=backbone, lora=LoraOptions(rank=4, scope=scope),
                                    aspects=["total", "fluency"], objective=objective))
    responses = read_manifest(manifest, ["total", "fluency"])[:8]
    audios = [load_audio(r.audio) for r in responses]
    prompts = [r.text for r in responses]
    targets = torch.tensor([[r.scores["total"], r.scores["fluency"]] for r in responses])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        audio = model.backbone.encode(model.backbone.features(audios))
        loss = score_loss(model(audio, prompts), targets, model.scale, objective)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, losses


@pytest.mark.parametrize("backbone", ["whisper", "qwen2-audio"])
def test_training_steps_reduce_the_loss(backbone, tiny_whisper, tiny_qwen, small_manifest):
    folder = tiny_whisper if backbone == "whisper" else tiny_qwen
    model, losses = overfit(BackboneConfig(backbone, folder), small_manifest, scope="all")
    assert model.audio_encoder_trainable
    assert losses[-1] < 0.6 * losses[0], losses


def test_text_scope_freezes_the_audio_encoder(tiny_whisper):
    model = GraderModel(ModelConfig(backbone=BackboneConfig("whisper", tiny_whisper)))
    assert not model.audio_encoder_trainable
    assert any("lora" in n for n, p in model.named_parameters() if p.requires_grad)
    heads_only = GraderModel(ModelConfig(backbone=BackboneConfig("whisper", tiny_whisper), lora=LoraOptions(rank=0)))
    assert all(n.startswith("heads.") for n, p in heads_only.named_parameters() if p.requires_grad)


def test_batching_is_exact(tiny_whisper, speech_clip):
    """A response scores the same alone or padded in a batch beside a longer one (masks, not padding, decide)."""
    model = GraderModel(ModelConfig(backbone=BackboneConfig("whisper", tiny_whisper))).eval()
    short = load_audio(speech_clip)
    long = np.concatenate([short, short, short])
    with torch.inference_mode():
        alone = model.heads(model.backbone.represent(model.backbone.encode(model.backbone.features([short])), [None]))
        both = model.heads(model.backbone.represent(model.backbone.encode(model.backbone.features([short, long])),
                                                    [None, "WE CALL IT BEAR"]))
    torch.testing.assert_close(alone.logits[0], both.logits[0], atol=1e-4, rtol=1e-4)


def test_pad_to_30s_runs_the_stock_window(tiny_whisper, speech_clip):
    model = GraderModel(ModelConfig(backbone=BackboneConfig("whisper", tiny_whisper, pad_to_30s=True)))
    states = model.backbone.encode(model.backbone.features([load_audio(speech_clip)]))
    assert states.states.shape[1] == 1500 and states.lengths.tolist() == [1500]


@pytest.mark.parametrize("objective", ["reg", "ce", "fa", "ce+reg", "fa+reg", "fa+ce+reg"])
def test_objectives_give_finite_gradients(objective):
    from grader.model import HeadOutput
    from grader.scale import get_scale

    scale = get_scale("sandi")
    output = HeadOutput(torch.randn(4, 1, requires_grad=True), torch.randn(4, 1, 9, requires_grad=True))
    loss = score_loss(output, torch.tensor([[2.0], [4.3], [6.0], [3.5]]), scale, objective)
    loss.backward()
    assert torch.isfinite(loss)
    assert (output.regression.grad is not None) == ("reg" in objective)
    assert (output.logits.grad is not None) == ("ce" in objective or "fa" in objective)


def test_fa_loss_is_minimised_by_the_fair_average_distribution():
    from grader.model import HeadOutput
    from grader.scale import get_scale

    scale = get_scale("sandi")
    target = torch.tensor([[4.3]])
    best = scale.fair_average_target(target).clamp(min=1e-9).log()
    worse = best + torch.randn_like(best) * 0.5
    loss = lambda logits: score_loss(HeadOutput(torch.zeros(1, 1), logits), target, scale, "fa")  # noqa: E731
    assert loss(best) < loss(worse)
    decoded = decode(HeadOutput(torch.tensor([[9.0]]), best), scale)
    assert decoded.soft.item() == pytest.approx(4.3, abs=1e-4) and decoded.hard.item() == 4.5
    assert decoded.regression.item() == 6.0  # clamped to the scale
    with pytest.raises(ValueError, match="unknown objective"):
        parse_objective("fa+mse")


def test_train_resume_save_load_and_evaluate(tiny_whisper, small_manifest, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--manifest", str(small_manifest), "--model", tiny_whisper, "--dev-speakers", "3", "--batch-size", "8",
              "--target", "total,accuracy", "--cache-dir", "", "--out", str(out)]
    train_main(common + ["--epochs", "1"])
    assert (out / "weights.safetensors").is_file() and (out / "last" / "trainer.pt").is_file()
    train_main(common + ["--epochs", "2", "--resume"])
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert "resumed after epoch 1" in capsys.readouterr().out

    info = json.loads((out / "grader.json").read_text())
    assert info["model"]["aspects"] == ["total", "accuracy"] and info["scale_spec"]["name"] == "speechocean762"
    audios = [load_audio(r.audio) for r in read_manifest(small_manifest, ["total"])[:3]]
    first = Grader.load(out).grade_batch(audios, ["WE CALL IT BEAR", None, None])
    again = Grader.load(out).grade_batch(audios, ["WE CALL IT BEAR", None, None])
    assert [p.to_dict()["scores"] for p in first] == [p.to_dict()["scores"] for p in again]
    probs = first[0].scores["total"].probs
    assert len(probs) == 11 and sum(probs) == pytest.approx(1, abs=1e-4)

    report = tmp_path / "metrics.json"
    evaluate_main(["--checkpoint", str(out), "--manifest", str(small_manifest), "--target", "total",
                   "--json", str(report)])
    metrics = json.loads(report.read_text())
    assert {"rmse", "pcc", "src", "krc", "within_0_5", "within_1_0"} <= set(metrics) and metrics["n"] == 36
    evaluate_main(["--checkpoint", str(out), "--manifest", str(small_manifest), "--dev-speakers", "3",
                   "--json", str(report)])
    assert json.loads(report.read_text())["n"] == 9  # the 3 speakers training held out, 3 responses each


def test_bf16_and_30s_window_grade_the_same_response_closely(tiny_checkpoint, speech_clip):
    audio = load_audio(speech_clip)
    exact = Grader.load(tiny_checkpoint).grade(audio, "WE CALL IT BEAR")
    for variant in (dict(precision="bf16"), dict(pad_to_30s=True)):
        other = Grader.load(tiny_checkpoint, **variant).grade(audio, "WE CALL IT BEAR")
        for aspect, score in exact.scores.items():
            assert other.scores[aspect].probs != score.probs, variant  # really another computation
            assert abs(other.scores[aspect].soft - score.soft) < 0.5, variant
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        Grader.load(tiny_checkpoint, precision="int3")


def test_bf16_without_hardware_support_warns(tiny_checkpoint, caplog):
    """Emulated bf16 is several times slower than fp32: whoever asks for it on such a CPU is told at load time."""
    with caplog.at_level("WARNING", logger="grader.inference"):
        Grader.load(tiny_checkpoint, device="cpu", precision="bf16")
        Grader.load(tiny_checkpoint, device="cpu", precision="fp32")
    warnings = [r.getMessage() for r in caplog.records if "without native bfloat16" in r.getMessage()]
    assert len(warnings) == (0 if native_bf16(torch.device("cpu")) else 1)  # an AVX2-only CPU: 1
    assert all(torch.backends.cpu.get_cpu_capability() in w for w in warnings)


def test_missing_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="no grader checkpoint.*grader.train"):
        Grader.load(tmp_path / "nowhere")


def test_manifest_errors(tmp_path, speech_clip):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "absent.tsv", ["total"])
    empty = tmp_path / "empty.tsv"
    empty.write_text("audio\ttotal\n")
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(empty, ["total"])
    bad = tmp_path / "bad.csv"
    bad.write_text(f"audio,total\n{speech_clip},seven\n")
    with pytest.raises(ManifestError, match=r"bad.csv:2: total score 'seven' is not a number"):
        read_manifest(bad, ["total"])
    missing = tmp_path / "missing.tsv"
    missing.write_text("audio\ttotal\nnowhere.flac\t7\n")
    with pytest.raises(ManifestError, match="missing.tsv:2: audio file not found"):
        read_manifest(missing, ["total"])
    with pytest.raises(ManifestError, match="lacks column"):
        read_manifest(missing, ["fluency"])


def test_corpus_manifest_reads_as_is(speechocean_clips):
    """The corpus's own labels.tsv (here the bundled clips' rows of it, same columns) reads without conversion."""
    responses = read_manifest(speechocean_clips / "labels.tsv", ["total", "accuracy", "fluency", "prosodic"])
    assert len(responses) == 36 and responses[0].text == "WE CALL IT BEAR" and responses[0].speaker == "0001"
    assert responses[0].audio == speechocean_clips / "audio" / "000010011.flac" and responses[0].duration == 2.58
    train, dev = split_by_speaker(responses, 3)
    assert not {r.speaker for r in train} & {r.speaker for r in dev}
    assert len({r.speaker for r in dev}) == 3
    batches = length_batches([r.duration for r in responses], 16, shuffle=True)
    assert sorted(i for b in batches for i in b) == list(range(36))


def test_rater_means_replace_training_labels_only(speechocean_clips):
    """The fair average: 000010011's five totals are 7.6, 9, ... (labels.tsv says 8, the floor of the median)."""
    aspects = ["total", "fluency"]
    means = read_rater_means(speechocean_clips / "raters.tsv", aspects)
    assert len(means) == 36 and means["000010011"]["total"] != 8.0
    config = TrainConfig(manifest=str(speechocean_clips / "labels.tsv"), model=ModelConfig(aspects=aspects),
                         rater_scores=str(speechocean_clips / "raters.tsv"), dev_speakers=3)
    train, dev = load_responses(config)
    assert all(r.scores == means[r.utt_id] for r in train)
    assert all(r.scores["total"].is_integer() for r in dev)  # dev keeps the labels it is measured against
    labels = {r.utt_id: r.scores for r in read_manifest(speechocean_clips / "labels.tsv", aspects)}
    some = replace(config, rater_aspects=["fluency"])  # fluency learns the mean, total keeps its label
    train, _ = load_responses(some)
    assert all(r.scores == {"total": labels[r.utt_id]["total"], "fluency": means[r.utt_id]["fluency"]} for r in train)
    assert any(r.scores["fluency"] != labels[r.utt_id]["fluency"] for r in train)
    with pytest.raises(ValueError, match="--rater-aspects"):
        replace(config, rater_aspects=["prosodic"])  # not a target
    with pytest.raises(ValueError, match="--rater-aspects"):
        replace(config, rater_scores=None, rater_aspects=["fluency"])


def test_speak_and_improve_layout(tmp_path, speech_clip):
    flists, marks = tmp_path / "reference-materials" / "flists.flac", tmp_path / "reference-materials" / "sla-marks"
    flists.mkdir(parents=True)
    marks.mkdir(parents=True)
    (tmp_path / "data" / "flac" / "dev" / "01").mkdir(parents=True)
    for utt in ("SI114J-00011-P30017", "SI114J-00045-P30017"):
        shutil.copy(speech_clip, tmp_path / "data" / "flac" / "dev" / "01" / f"{utt}.flac")
    (flists / "dev-sla-P3.tsv").write_text(
        "SI114J-00011-P30017\tdata/flac/dev/01/SI114J-00011-P30017.flac\n"
        "SI114J-00045-P30017\tdata/flac/dev/01/SI114J-00045-P30017.flac\n")
    (marks / "dev-sla-P3.tsv").write_text("SI114J-00011\t5.000\nSI114J-00045\t3.500\n")
    responses = read_speak_and_improve(tmp_path, "dev", parts=("P3",))
    assert [(r.speaker, r.part, r.scores["total"]) for r in responses] == [("SI114J", "P3", 5.0), ("SI114J", "P3", 3.5)]
    assert all(r.audio.is_file() for r in responses)
    with pytest.raises(ManifestError, match="not found"):
        read_speak_and_improve(tmp_path, "dev", parts=("P1",))


def test_compare_tables_runs_at_a_fixed_epoch(tiny_checkpoint, capsys):
    from grader.compare import main as compare_main

    compare_main([str(tiny_checkpoint), str(tiny_checkpoint), "--epoch", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run | model | objective | epoch | decoding | total PCC |")
    assert lines[0].endswith("| accuracy PCC | fluency PCC | prosodic PCC |")
    assert len(lines) == 2 + 2 * 3  # header, rule, then regression/soft/hard for each run
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    with pytest.raises(SystemExit, match="has no epoch 9"):
        compare_main([str(tiny_checkpoint), "--epoch", "9"])


def test_compare_marks_unfinished_runs_and_missing_aspects(tiny_checkpoint, tmp_path, capsys):
    """A total-only run stopped after epoch 1 of 3, beside a finished four-aspect run."""
    from grader.compare import main as compare_main

    stopped = tmp_path / "total-only"
    shutil.copytree(tiny_checkpoint, stopped)
    info = json.loads((stopped / "grader.json").read_text())
    info["training"]["epochs"] = 3
    (stopped / "grader.json").write_text(json.dumps(info))
    history = json.loads((stopped / "history.json").read_text())[:1]
    history[0]["metrics"] = {k: v for k, v in history[0]["metrics"].items() if k.startswith("total/")}
    history[0]["metrics"]["word/accuracy"] = history[0]["metrics"]["total/soft"]  # a run with word heads: no decodings
    (stopped / "history.json").write_text(json.dumps(history))
    compare_main([str(stopped), str(tiny_checkpoint)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("| accuracy PCC | fluency PCC | prosodic PCC |")
    assert lines[2].startswith("| total-only |") and "| 1 of 3 (unfinished) |" in lines[2]
    assert lines[2].endswith("| - | - | - |") and not lines[-1].endswith("| - |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
