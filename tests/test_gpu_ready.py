"""What GPU training and serving rest on, checked on CPU with tiny random models: the LoRA merge, gradient
checkpointing, bf16 autocast, and data-parallel training under torchrun/accelerate (two CPU processes, gloo)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from grader.audio import load_audio
from grader.backbones import BackboneConfig
from grader.data import read_manifest
from grader.inference import Grader
from grader.merge import main as merge_main
from grader.model import GraderModel, LoraOptions, ModelConfig, score_loss
from grader.train import main as train_main

REPO = Path(__file__).resolve().parents[1]


def test_a_merged_checkpoint_grades_as_its_adapters_did(tiny_checkpoint, small_manifest, tmp_path):
    from peft.tuners.lora import LoraLayer

    out = tmp_path / "merged"
    merge_main([str(tiny_checkpoint), str(out)])
    info = json.loads((out / "grader.json").read_text())
    assert info["model"]["lora"]["rank"] == 0 and info["merged_from"]["lora_layers"] > 0
    assert all(name.startswith("heads.") for name in load_file(out / "weights.safetensors"))
    responses = read_manifest(small_manifest, ["total"])[:4]
    audios, texts = [load_audio(r.audio) for r in responses], [r.text for r in responses]
    merged, adapted = Grader.load(out), Grader.load(tiny_checkpoint)
    assert not [m for m in merged.model.modules() if isinstance(m, LoraLayer)]
    for a, b in zip(merged.grade_batch(audios, texts), adapted.grade_batch(audios, texts)):
        for aspect, score in a.scores.items():
            assert score.probs == pytest.approx(b.scores[aspect].probs, abs=1e-4)
            assert score.regression == pytest.approx(b.scores[aspect].regression, abs=1e-4)


@pytest.mark.parametrize("backbone", ["whisper", "qwen2-audio"])
def test_gradient_checkpointing_gives_the_same_gradients(backbone, tiny_whisper, tiny_qwen, small_manifest):
    responses = read_manifest(small_manifest, ["total"])[:4]
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        config = ModelConfig(backbone=BackboneConfig(backbone, tiny_whisper if backbone == "whisper" else tiny_qwen),
                             lora=LoraOptions(rank=4, dropout=0.0, scope="all"), head="tokens", head_dropout=0.0)
        model = GraderModel(config).train()
        if checkpointing:
            model.backbone.model.activation_checkpointing_enable({"use_reentrant": False})
        audio = model.backbone.encode(model.backbone.features([load_audio(r.audio) for r in responses]))
        output = model(audio, [r.text for r in responses])
        score_loss(output, torch.tensor([[r.scores["total"]] for r in responses]), model.scale, "fa+reg").backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    layers = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
    assert layers and all(m.gradient_checkpointing for m in layers)
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_and_checkpointing_flags_train(tiny_whisper, small_manifest, tmp_path):
    out = tmp_path / "bf16"
    train_main(["--manifest", str(small_manifest), "--model", tiny_whisper, "--dtype", "bfloat16",
                "--precision", "bf16",
                "--gradient-checkpointing", "--head", "tokens", "--dev-speakers", "3", "--epochs", "1",
                "--batch-size", "8", "--cache-dir", "", "--out", str(out)])
    weights = load_file(out / "weights.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values())  # LoRA and heads train in fp32 beside bf16
    with pytest.raises(SystemExit):
        train_main(["--manifest", str(small_manifest), "--precision", "fp8"])


def test_data_parallel_training_shards_the_batches(tiny_whisper, small_manifest, tmp_path):
    """Two processes under torchrun (accelerate's data-parallel on CPU): each takes every other batch, gradients
    are averaged, the schedule runs to its end, and only the main process writes."""
    common = ["--manifest", str(small_manifest), "--model", tiny_whisper, "--head", "tokens", "--dev-speakers", "0",
              "--epochs", "2", "--batch-size", "8", "--threads", "1", "--cache-dir", str(tmp_path / "cache")]
    env = os.environ | {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "grader.train",
                          *common, "--out", str(tmp_path / "ddp")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("saved to") == 2  # one process wrote, once per epoch
    train_main(common + ["--out", str(tmp_path / "single")])

    def steps(folder):
        state = torch.load(folder / "last" / "trainer.pt", weights_only=False)
        return next(iter(state["optimizer"]["state"].values()))["step"].item(), state["schedule"]["last_epoch"]

    train_batches = math.ceil(len(read_manifest(small_manifest)) / 8)
    assert steps(tmp_path / "single") == (2 * train_batches, 2 * train_batches)
    per_process = 2 * (train_batches // 2)
    assert steps(tmp_path / "ddp") == (per_process, 2 * per_process)  # the schedule steps once per process
    assert Grader.load(tmp_path / "ddp").grade(load_audio(read_manifest(small_manifest)[0].audio)).scores


def test_the_gpu_benchmark_runs_every_head_and_the_zero_shot_grader(tmp_path):
    """benchmarks/bench_gpu.py, the script a lent GPU runs unchanged at 7B size, on the tiny config and short clips."""
    from benchmarks.bench_gpu import main as bench_main

    results = bench_main(["--tiny", "--batches", "1,2", "--clip-seconds", "2", "--repeats", "1", "--train-batch", "2",
                          "--train-steps", "1", "--out", str(tmp_path / "gpu.json")])
    runs = results["runs"]
    assert list(runs) == ["pooled", "tokens", "zero-shot"]
    assert all("error" not in g and g["responses_per_s"] > 0 for run in runs.values() for g in run["grading"])
    assert runs["tokens"]["training_step"]["step_s"] > 0 and runs["zero-shot"]["trainable_parameters"] == 0
    assert json.loads((tmp_path / "gpu.json").read_text())["runs"].keys() == runs.keys()
