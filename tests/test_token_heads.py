"""Score-token heads (the LM head's logits of option tokens at the answer positions) and the zero-shot grader, on
tiny random Whisper and Qwen2-Audio: the real code paths with random weights."""

import json

import numpy as np
import pytest
import torch

from grader.audio import load_audio
from grader.backbones import BackboneConfig
from grader.data import read_manifest
from grader.inference import Grader
from grader.model import GraderModel, LoraOptions, ModelConfig, answer_prompt, decode, score_loss
from grader.scale import SCALES
from grader.train import main as train_main

BACKBONES = ["whisper", "qwen2-audio"]


@pytest.fixture(scope="module")
def folders(tiny_whisper, tiny_qwen):
    return {"whisper": tiny_whisper, "qwen2-audio": tiny_qwen}


def token_model(name: str, folder: str, aspects=("total", "accuracy", "fluency"), **kwargs) -> GraderModel:
    torch.manual_seed(0)
    config = ModelConfig(backbone=BackboneConfig(name, folder), head="tokens", aspects=list(aspects), **kwargs)
    return GraderModel(config).eval()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_option_tokens_are_single_tokens(backbone, folders):
    model = token_model(backbone, folders[backbone])
    tokenizer, lead = model.backbone.tokenizer, model.backbone.answer_lead
    for scale in SCALES.values():
        options = answer_prompt(scale, ["total"]).options
        ids = model.backbone.option_ids(options)
        assert len(set(ids)) == len(options) == scale.num_classes
        assert [tokenizer.decode([i]) for i in ids] == [lead + o for o in options]
    with pytest.raises(ValueError, match="distinct single tokens"):
        model.backbone.option_ids(("Option A", "Option B"))


def test_the_prompt_names_every_class():
    prompt = answer_prompt(SCALES["sandi"], ["total"])
    assert prompt.options == tuple("ABCDEFGHI")
    assert "A. 2: A2" in prompt.instruction and "I. 6: C2" in prompt.instruction
    assert "E. 4: B2" in prompt.instruction and "overall" in prompt.questions[0]
    assert "K. 10: native-like" in answer_prompt(SCALES["speechocean762"], ["total"]).instruction


def whisper_reference(model: GraderModel, audio, text: str, aspect: str) -> torch.Tensor:
    """The option logits of one aspect from transformers' own Whisper forward on that aspect's prompt alone."""
    backbone = model.backbone
    ids = backbone.prompt_ids(text)[:-1] + backbone.tokenizer.encode(f" {aspect}:", add_special_tokens=False)
    logits = backbone.model(encoder_outputs=(audio.states,), decoder_input_ids=torch.tensor([ids])).logits
    return logits[0, -1, model.option_ids]


def qwen_reference(model: GraderModel, audio, text: str, question: str) -> torch.Tensor:
    """The option logits of one question from the LLM's plain causal forward on that question's chat alone."""
    backbone, instruction = model.backbone, model.prompt.instruction
    embed = backbone.model.get_input_embeddings()

    def embedded(s):
        return embed(torch.tensor(backbone.tokenizer.encode(s, add_special_tokens=False)))

    sequence = torch.cat([
        embedded("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                 "<|im_start|>user\nAudio 1: <|audio_bos|>"),
        audio.unbatch()[0],
        embedded(f'<|audio_eos|>\n{instruction}\nThe candidate was asked to read: "{text}"\n{question}<|im_end|>\n'
                 "<|im_start|>assistant\n")])
    states = backbone.model.model.language_model(inputs_embeds=sequence[None]).last_hidden_state
    return backbone.model.lm_head(states[0, -1])[model.option_ids]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_logits_are_read_at_the_answer_positions(backbone, folders, speech_clip):
    """Each aspect's logits are the LM head's at the end of its own prompt, as if the others were not there, and
    the same alone or padded beside a longer response."""
    model = token_model(backbone, folders[backbone])
    clip = load_audio(speech_clip)
    text = "WE CALL IT BEAR"
    with torch.inference_mode():
        audio = model.backbone.encode(model.backbone.features([clip]))
        answers = model.backbone.answer(audio, [text], model.prompt, model.option_ids)
        for a, (aspect, question) in enumerate(zip(model.prompt.aspects, model.prompt.questions)):
            expected = (whisper_reference(model, audio, text, aspect) if backbone == "whisper"
                        else qwen_reference(model, audio, text, question))
            torch.testing.assert_close(answers.logits[0, a], expected, atol=1e-4, rtol=1e-4)
        both = model.backbone.encode(model.backbone.features([clip, np.concatenate([clip, clip, clip])]))
        batched = model.backbone.answer(both, [text, None], model.prompt, model.option_ids)
    torch.testing.assert_close(batched.logits[0], answers.logits[0], atol=1e-4, rtol=1e-4)
    assert answers.states.shape == (1, 3, model.backbone.hidden_size)


def test_soft_decoding_is_the_expectation(tiny_qwen, speech_clip):
    model = token_model("qwen2-audio", tiny_qwen, objective="fa")  # no regression head: regression is the soft score
    with torch.inference_mode():
        output = model(model.backbone.encode(model.backbone.features([load_audio(speech_clip)])), [None])
    decoded = decode(output, model.scale)
    expectation = (output.logits.softmax(-1) * model.scale.values).sum(-1)
    torch.testing.assert_close(decoded.soft, expectation)
    torch.testing.assert_close(decoded.regression, expectation)
    assert decoded.hard.tolist() == [model.scale.values[output.logits[0].argmax(-1)].tolist()]
    assert model.heads.regression is None and not [p for p in model.heads.parameters()]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_token_heads_train(backbone, folders, small_manifest):
    model = token_model(backbone, folders[backbone], aspects=("total", "fluency"), lora=LoraOptions(rank=4),
                        objective="fa+reg").train()
    responses = read_manifest(small_manifest, ["total", "fluency"])[:8]
    audio = model.backbone.encode(model.backbone.features([load_audio(r.audio) for r in responses]))
    targets = torch.tensor([[r.scores["total"], r.scores["fluency"]] for r in responses])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(20):
        loss = score_loss(model(audio, [r.text for r in responses]), targets, model.scale, "fa+reg")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and all(p.abs().sum() > 0 for p in lora)  # the LM-head logits train through LoRA


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_saved_token_checkpoint_reloads_to_identical_scores(backbone, folders, small_manifest, tmp_path):
    out = tmp_path / "tokens"
    train_main(["--manifest", str(small_manifest), "--backbone", backbone, "--model", folders[backbone],
                "--head", "tokens", "--dev-speakers", "3", "--epochs", "1", "--batch-size", "8",
                "--target", "total,fluency", "--cache-dir", "", "--out", str(out)])
    assert json.loads((out / "grader.json").read_text())["model"]["head"] == "tokens"
    audios = [load_audio(r.audio) for r in read_manifest(small_manifest, ["total"])[:3]]
    first = Grader.load(out).grade_batch(audios, ["WE CALL IT BEAR", None, None])
    again = Grader.load(out).grade_batch(audios, ["WE CALL IT BEAR", None, None])
    assert [p.to_dict()["scores"] for p in first] == [p.to_dict()["scores"] for p in again]
    assert set(first[0].scores) == {"total", "fluency"} and len(first[0].scores["total"].probs) == 11


def test_checkpoints_without_a_head_field_load_as_pooled(tiny_checkpoint, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_checkpoint, old)
    info = json.loads((old / "grader.json").read_text())
    info["model"].pop("head", None)
    (old / "grader.json").write_text(json.dumps(info))
    assert Grader.load(old).model.config.head == "pooled"


def test_head_options_are_checked(tiny_whisper):
    with pytest.raises(ValueError, match="head must be one of pooled, tokens"):
        ModelConfig(head="logits")
    with pytest.raises(ValueError, match="--head pooled"):
        ModelConfig(backbone=BackboneConfig("whisper", tiny_whisper, pooling="last+mean"), head="tokens")


def test_zero_shot_grades_and_says_it_is_uncalibrated(tiny_qwen, speech_clip, small_manifest, tmp_path, caplog):
    """The checkpoint-less grader on the tiny random Qwen2-Audio: the real code path, random weights."""
    from types import SimpleNamespace

    from grader.evaluate import main as evaluate_main
    from grader.options import parse_options
    from ui.cards import result_card
    from ui.config import AppConfig

    with caplog.at_level("WARNING", logger="grader.inference"):
        grader = Grader.zero_shot(tiny_qwen, aspects=["total", "fluency"], device="cpu")
    assert "uncalibrated" in caplog.text and grader.uncalibrated
    assert not [p for p in grader.model.parameters() if p.requires_grad]  # nothing trained, nothing to train
    prediction = grader.grade(load_audio(speech_clip), "WE CALL IT BEAR")
    result = prediction.to_dict()
    assert result["uncalibrated"] is True and "never trained on human scores" in result["note"]
    assert result["checkpoint"] == f"zero-shot:{tiny_qwen}" and set(result["scores"]) == {"total", "fluency"}
    for score in prediction.scores.values():
        assert sum(score.probs) == pytest.approx(1, abs=1e-5)
        assert score.regression == pytest.approx(score.soft)  # no regression head: the soft score stands in
    assert "Uncalibrated" in result_card(SimpleNamespace(prediction=prediction, review=[], response_id=1))
    assert "uncalibrated" not in Grader.load(None).grade(load_audio(speech_clip)).to_dict()

    report = tmp_path / "zero-shot.json"
    evaluate_main(["--zero-shot", tiny_qwen, "--manifest", str(small_manifest), "--target", "total",
                   "--json", str(report)])
    metrics = json.loads(report.read_text())
    assert metrics["uncalibrated"] is True and metrics["checkpoint"].startswith("zero-shot:")
    assert metrics["n"] == len(read_manifest(small_manifest, ["total"]))
    assert parse_options(AppConfig, ["--zero-shot", tiny_qwen]).zero_shot == tiny_qwen
