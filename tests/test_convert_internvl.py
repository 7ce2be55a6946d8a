"""InternVL2.5 / 3 / 3.5 original remote-code layout <-> native InternVLForConditionalGeneration.

A tiny random native model is written in the original layout (fused qkv, >= 2 safetensors shards
with an index, original-style config.json) by the inverse mapping, read back by ``load_internvl``,
and must give identical logits. Because a forward/inverse pair can share a mistake, the original
layout is also run through an independent re-implementation of the original vision path
(InternViT with fused qkv + pixel shuffle v2 + mlp1) and compared with the native model.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoTokenizer,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from projects.salma.models.convert.common import CheckpointMismatchError, load_safetensors_folder, save_sharded_safetensors
from projects.salma.models.convert.internvl import (
    convert_internvl_state_dict_to_original,
    find_image_token_id,
    internvl_config_from_original,
    internvl_config_to_original,
    load_internvl,
    save_internvl_original_layout,
)

REPO = Path(__file__).resolve().parents[1]
VOCAB = 300
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]

# (qk_norm, norm_type, qkv_bias): InternViT-300M style (InternVL2.5-1B/4B) and InternViT-6B style
VARIANTS = {"vit300m": (False, "layer_norm", True), "vit6b": (True, "rms_norm", False)}


def _tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with InternVL's image tokens; no files, no network."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + [f"w{i}" for i in range(VOCAB - len(SPECIAL))])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": SPECIAL[3:]})
    return tok


def _tiny_native(
    variant: str, image_token_id: int, *, tie: bool = False, vocab: int = VOCAB, template: str = "internvl2_5",
    llm: str = "qwen2",
) -> InternVLForConditionalGeneration:
    qk_norm, norm_type, qkv_bias = VARIANTS[variant]
    vision = InternVLVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64,
        patch_size=16, use_qk_norm=qk_norm, norm_type=norm_type, attention_bias=qkv_bias,
    )
    if llm == "qwen2":  # InternVL2.5-1B/4B, InternVL3 (Qwen2.5): q/k/v biases, dynamic RoPE as 2.5 ships it
        text = Qwen2Config(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            vocab_size=vocab, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e6},
            tie_word_embeddings=tie,
        )
    else:  # InternVL3.5 (Qwen3): per-head RMS q/k norms, no biases, head_dim given (not hidden / heads = 16)
        text = Qwen3Config(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
            intermediate_size=128, vocab_size=vocab, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            tie_word_embeddings=tie,
        )
    config = InternVLConfig(  # 64 px / 16 px patches = 4x4, pixel shuffle 0.5 -> 2x2 = 4 tokens
        vision_config=vision, text_config=text, image_token_id=image_token_id, image_seq_length=4,
        downsample_ratio=0.5, tie_word_embeddings=tie, template=template,
    )
    torch.manual_seed(0)
    model = InternVLForConditionalGeneration(config).eval()
    with torch.no_grad():  # the init leaves cls / pos embeddings at 0 and norms at 1: randomise all
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(tok: PreTrainedTokenizerFast) -> dict[str, torch.Tensor]:
    text = "<|im_start|> w10 <img> " + "<IMG_CONTEXT> " * 4 + "</img> w11 w12 <|im_end|> w13"
    gen = torch.Generator().manual_seed(1)
    return dict(
        input_ids=torch.tensor([tok.convert_tokens_to_ids(text.split())]),
        pixel_values=torch.randn(1, 3, 64, 64, generator=gen),
    )


@torch.no_grad()
def _logits(model, inputs) -> torch.Tensor:
    return model(**inputs).logits


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return _tokenizer()


def _original_folder(tmp_path: Path, model, tok, name: str = "orig") -> Path:
    folder = tmp_path / name
    tok.save_pretrained(folder)
    save_internvl_original_layout(model, folder, num_shards=3)
    return folder


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_original_layout_loads_with_identical_logits(variant, tok, tmp_path):
    native = _tiny_native(variant, tok.convert_tokens_to_ids("<IMG_CONTEXT>"))
    folder = _original_folder(tmp_path, native, tok)

    config = json.loads((folder / "config.json").read_text())
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert config["architectures"] == ["InternVLChatModel"] and "llm_config" in config
    assert len(set(index["weight_map"].values())) == 3
    assert "vision_model.encoder.layers.1.attn.qkv.weight" in index["weight_map"]
    assert not any("q_proj" in k and k.startswith("vision_model") for k in index["weight_map"])

    loaded = load_internvl(folder)  # image_token_id found in the tokenizer files
    assert loaded.config.image_token_id == native.config.image_token_id
    assert loaded.config.image_seq_length == 4 and loaded.config.template == "internvl2_5"
    assert loaded.config.text_config.rope_parameters["rope_type"] == "dynamic"
    inputs = _inputs(tok)
    torch.testing.assert_close(_logits(loaded, inputs), _logits(native, inputs), rtol=0, atol=0)


def _reference_image_features(sd: dict[str, torch.Tensor], config: dict, pixel_values: torch.Tensor) -> torch.Tensor:
    """The original InternVLChatModel.extract_feature, re-implemented from its published algorithm on
    the ORIGINAL-layout weights: InternViT layers with a fused qkv reshaped to (3, heads, head_dim),
    optional RMS q/k norm over all heads, layer scales ls1/ls2, CLS dropped, pixel shuffle v2, mlp1."""
    vc = config["vision_config"]
    dim, heads, eps, patch = vc["hidden_size"], vc["num_attention_heads"], vc["layer_norm_eps"], vc["patch_size"]
    head_dim = dim // heads

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def norm(x, prefix):
        if vc["norm_type"] == "rms_norm":
            return rms(x, sd[f"{prefix}.weight"])
        return F.layer_norm(x, (dim,), sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps)

    x = F.conv2d(pixel_values, sd["vision_model.embeddings.patch_embedding.weight"],
                 sd["vision_model.embeddings.patch_embedding.bias"], stride=patch)
    batch = x.shape[0]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["vision_model.embeddings.class_embedding"].expand(batch, 1, -1), x], dim=1)
    x = x + sd["vision_model.embeddings.position_embedding"]  # native resolution: no interpolation
    n = x.shape[1]
    for i in range(vc["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}"
        qkv = F.linear(norm(x, f"{p}.norm1"), sd[f"{p}.attn.qkv.weight"], sd.get(f"{p}.attn.qkv.bias"))
        q, k, v = qkv.reshape(batch, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if vc["qk_normalization"]:
            q = rms(q.transpose(1, 2).flatten(-2), sd[f"{p}.attn.q_norm.weight"]).view(batch, n, heads, head_dim).transpose(1, 2)
            k = rms(k.transpose(1, 2).flatten(-2), sd[f"{p}.attn.k_norm.weight"]).view(batch, n, heads, head_dim).transpose(1, 2)
        attn = ((q * head_dim**-0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        attn = F.linear(attn.transpose(1, 2).reshape(batch, n, dim), sd[f"{p}.attn.proj.weight"], sd[f"{p}.attn.proj.bias"])
        x = x + attn * sd[f"{p}.ls1"]
        h = F.gelu(F.linear(norm(x, f"{p}.norm2"), sd[f"{p}.mlp.fc1.weight"], sd[f"{p}.mlp.fc1.bias"]))
        x = x + F.linear(h, sd[f"{p}.mlp.fc2.weight"], sd[f"{p}.mlp.fc2.bias"]) * sd[f"{p}.ls2"]
    x = x[:, 1:]
    side, r = int((n - 1) ** 0.5), config["downsample_ratio"]
    x = x.reshape(batch, side, side, dim)  # pixel shuffle, ps_version v2
    x = x.reshape(batch, side, int(side * r), int(dim / r)).permute(0, 2, 1, 3)
    x = x.reshape(batch, int(side * r), int(side * r), int(dim / r / r)).permute(0, 2, 1, 3)
    x = x.reshape(batch, -1, x.shape[-1])
    x = F.layer_norm(x, (x.shape[-1],), sd["mlp1.0.weight"], sd["mlp1.0.bias"], 1e-5)
    x = F.linear(F.gelu(F.linear(x, sd["mlp1.1.weight"], sd["mlp1.1.bias"])), sd["mlp1.3.weight"], sd["mlp1.3.bias"])
    return x


@torch.no_grad()
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_original_layout_matches_reference_vision_path(variant, tok, tmp_path):
    native = _tiny_native(variant, tok.convert_tokens_to_ids("<IMG_CONTEXT>"))
    folder = _original_folder(tmp_path, native, tok)
    pixel_values = _inputs(tok)["pixel_values"]
    expected = _reference_image_features(
        load_safetensors_folder(folder), json.loads((folder / "config.json").read_text()), pixel_values
    )
    actual = native.model.get_image_features(pixel_values).pooler_output
    assert actual.shape == (1, 4, 64)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_native_folder_loads_directly(tok, tmp_path):
    native = _tiny_native("vit300m", tok.convert_tokens_to_ids("<IMG_CONTEXT>"), tie=True)
    native.save_pretrained(tmp_path / "native")
    loaded = load_internvl(tmp_path / "native")
    assert loaded.lm_head.weight.data_ptr() == loaded.model.language_model.embed_tokens.weight.data_ptr()
    inputs = _inputs(tok)
    torch.testing.assert_close(_logits(loaded, inputs), _logits(native, inputs), rtol=0, atol=0)


def test_tied_embeddings_roundtrip_through_original_layout(tok, tmp_path):
    native = _tiny_native("vit300m", tok.convert_tokens_to_ids("<IMG_CONTEXT>"), tie=True)
    folder = _original_folder(tmp_path, native, tok)
    assert "language_model.lm_head.weight" not in load_safetensors_folder(folder)
    loaded = load_internvl(folder)
    inputs = _inputs(tok)
    torch.testing.assert_close(_logits(loaded, inputs), _logits(native, inputs), rtol=0, atol=0)


def _rewrite(folder: Path, edit) -> None:
    state_dict = load_safetensors_folder(folder)
    edit(state_dict)
    for shard in folder.glob("model-*.safetensors"):
        shard.unlink()
    save_sharded_safetensors(state_dict, folder, num_shards=2)


def test_missing_key_is_named(tok, tmp_path):
    folder = _original_folder(tmp_path, _tiny_native("vit300m", tok.convert_tokens_to_ids("<IMG_CONTEXT>")), tok)
    _rewrite(folder, lambda sd: sd.pop("vision_model.encoder.layers.1.mlp.fc2.bias"))
    with pytest.raises(CheckpointMismatchError, match=r"1 missing key\(s\): model\.vision_tower\.encoder\.layer\.1\.mlp\.fc2\.bias") as err:
        load_internvl(folder)
    assert err.value.missing == ["model.vision_tower.encoder.layer.1.mlp.fc2.bias"] and not err.value.unexpected


@pytest.mark.parametrize(
    "extra,reported",
    [
        ("vision_model.encoder.layers.0.attn.extra_proj.weight", "vision_model.encoder.layers.0.attn.extra_proj.weight"),
        ("language_model.model.layers.0.self_attn.extra_proj.weight", "model.language_model.layers.0.self_attn.extra_proj.weight"),
    ],
    ids=["vision", "llm"],
)
def test_extra_key_is_named(extra, reported, tok, tmp_path):
    folder = _original_folder(tmp_path, _tiny_native("vit300m", tok.convert_tokens_to_ids("<IMG_CONTEXT>")), tok)
    _rewrite(folder, lambda sd: sd.__setitem__(extra, torch.zeros(2)))
    with pytest.raises(CheckpointMismatchError, match=rf"1 unexpected key\(s\): {reported.replace('.', r'[.]')}") as err:
        load_internvl(folder)
    assert err.value.unexpected == [reported]


def test_native_folder_with_extra_key_fails(tok, tmp_path):
    native = _tiny_native("vit300m", tok.convert_tokens_to_ids("<IMG_CONTEXT>"))
    native.save_pretrained(tmp_path / "native")
    from safetensors.torch import load_file, save_file

    weights = load_file(str(tmp_path / "native" / "model.safetensors"))
    weights["model.multi_modal_projector.extra.weight"] = torch.zeros(2)
    save_file(weights, str(tmp_path / "native" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError, match=r"model\.multi_modal_projector\.extra\.weight"):
        load_internvl(tmp_path / "native")


# --- config of the published InternVL2.5-1B --------------------------------------------------

INTERNVL2_5_1B = {  # the fields of OpenGVLab/InternVL2_5-1B's config.json that matter
    "architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "downsample_ratio": 0.5,
    "dynamic_image_size": True, "force_image_size": 448, "max_dynamic_patch": 12, "min_dynamic_patch": 1,
    "ps_version": "v2", "select_layer": -1, "template": "internvl2_5", "tie_word_embeddings": False,
    "use_thumbnail": True,
    "llm_config": {
        "_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct", "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
        "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
        "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
        "rope_scaling": {"factor": 2.0, "rope_type": "dynamic", "type": "dynamic"}, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": False,
        "use_sliding_window": False, "vocab_size": 151674,
    },
    "vision_config": {
        "architectures": ["InternVisionModel"], "attention_dropout": 0.0, "drop_path_rate": 0.0, "dropout": 0.0,
        "hidden_act": "gelu", "hidden_size": 1024, "image_size": 448, "initializer_factor": 1.0,
        "initializer_range": 0.02, "intermediate_size": 4096, "layer_norm_eps": 1e-06, "model_type": "intern_vit_6b",
        "norm_type": "layer_norm", "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 24,
        "patch_size": 14, "qk_normalization": False, "qkv_bias": True, "use_flash_attn": True,
    },
}


def test_internvl2_5_1b_config_and_original_key_shapes():
    config = internvl_config_from_original(INTERNVL2_5_1B, image_token_id=151667)
    assert config.image_seq_length == 256 and config.vision_feature_layer == -1
    assert config.tie_word_embeddings is False and config.text_config.rope_parameters["rope_type"] == "dynamic"
    assert config.vision_config.attention_bias is True and config.vision_config.use_qk_norm is False
    with torch.device("meta"):
        model = InternVLForConditionalGeneration(config)
    assert 0.93e9 < sum(p.numel() for p in model.parameters()) < 0.95e9  # InternVL2.5-1B: 938M
    shapes = {k: tuple(v.shape) for k, v in convert_internvl_state_dict_to_original(model.state_dict(), config).items()}
    assert shapes["vision_model.encoder.layers.23.attn.qkv.weight"] == (3072, 1024)
    assert shapes["vision_model.embeddings.position_embedding"] == (1, 1025, 1024)
    assert shapes["mlp1.0.weight"] == (4096,) and shapes["mlp1.1.weight"] == (896, 4096) and shapes["mlp1.3.weight"] == (896, 896)
    assert shapes["language_model.lm_head.weight"] == (151674, 896)
    assert internvl_config_from_original(internvl_config_to_original(config), 151667).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c.update(ps_version="v1"), "pixel shuffle v2"),
        (lambda c: c["llm_config"].update(architectures=["InternLM2ForCausalLM"]), "InternLM2ForCausalLM is not supported"),
        (lambda c: c.update(force_image_size=224), "force_image_size=224"),
    ],
    ids=["ps_v1", "internlm2", "force_image_size"],
)
def test_unsupported_original_configs_fail_clearly(edit, message):
    config = json.loads(json.dumps(INTERNVL2_5_1B))
    edit(config)
    with pytest.raises(ValueError, match=message):
        internvl_config_from_original(config, image_token_id=151667)


def test_image_token_id_must_be_findable(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {"7": {"content": "<img>"}}}))
    with pytest.raises(ValueError, match="pass image_token_id explicitly"):
        find_image_token_id(tmp_path)


# --- CLI -------------------------------------------------------------------------------------


def test_cli_original_to_native_folder(tok, tmp_path):
    native = _tiny_native("vit6b", tok.convert_tokens_to_ids("<IMG_CONTEXT>"))
    folder = _original_folder(tmp_path, native, tok)
    spec = importlib.util.spec_from_file_location("internvl_to_hf", REPO / "tools" / "convert" / "internvl_to_hf.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cli.main(["--model", str(folder), "--out", str(tmp_path / "hf")])

    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "internvl"
    reloaded_tok = AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert reloaded_tok.convert_tokens_to_ids("<IMG_CONTEXT>") == tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    loaded = load_internvl(tmp_path / "hf")
    inputs = _inputs(tok)
    torch.testing.assert_close(_logits(loaded, inputs), _logits(native, inputs), rtol=0, atol=0)


# --- InternVL3 (Qwen2.5) and InternVL3.5 (Qwen3) ----------------------------------------------

# (ViT variant, LLM): InternVL3-1B..14B are InternViT-300M + Qwen2.5 (InternVL3-38B/78B: InternViT-6B);
# InternVL3.5-1B..38B are InternViT-300M/6B + Qwen3.
FAMILY = {"internvl3": ("vit300m", "qwen2"), "internvl3_5": ("vit300m", "qwen3"), "internvl3_5_vit6b": ("vit6b", "qwen3")}


def _qwen3_layer_keys(i: int) -> set[str]:
    """One Qwen3 decoder layer's keys under the remote code's ``language_model`` (an
    ``AutoModelForCausalLM.from_config(llm_config)``, i.e. Qwen3ForCausalLM): OpenGVLab's layout."""
    p = f"language_model.model.layers.{i}"
    return ({f"{p}.self_attn.{n}.weight" for n in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")}
            | {f"{p}.mlp.{n}.weight" for n in ("gate_proj", "up_proj", "down_proj")}
            | {f"{p}.input_layernorm.weight", f"{p}.post_attention_layernorm.weight"})


@pytest.mark.parametrize("family", sorted(FAMILY))
def test_internvl3_family_original_layout_loads_with_identical_logits(family, tok, tmp_path):
    variant, llm = FAMILY[family]
    native = _tiny_native(variant, tok.convert_tokens_to_ids("<IMG_CONTEXT>"), llm=llm)
    folder = _original_folder(tmp_path, native, tok)
    config = json.loads((folder / "config.json").read_text())
    assert config["llm_config"]["architectures"] == [{"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[llm]]
    keys = set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"])
    llm_keys = {k for k in keys if k.startswith("language_model.")}
    if llm == "qwen3":
        assert config["llm_config"]["head_dim"] == 24
        assert llm_keys == (_qwen3_layer_keys(0) | _qwen3_layer_keys(1)
                            | {"language_model.model.embed_tokens.weight", "language_model.model.norm.weight",
                               "language_model.lm_head.weight"})
    loaded = load_internvl(folder)
    assert loaded.config.text_config.model_type == llm and type(loaded.config.text_config) is type(native.config.text_config)
    inputs = _inputs(tok)
    torch.testing.assert_close(_logits(loaded, inputs), _logits(native, inputs), rtol=0, atol=0)


@torch.no_grad()
def test_internvl3_5_llm_weights_run_in_the_remote_codes_own_llm_class(tok, tmp_path):
    """Independent of the inverse mapping: the folder's ``language_model.*`` weights, loaded strictly into
    the class the remote code builds from ``llm_config`` (Qwen3ForCausalLM), give the text logits of the
    converted native model."""
    native = _tiny_native("vit300m", tok.convert_tokens_to_ids("<IMG_CONTEXT>"), llm="qwen3")
    folder = _original_folder(tmp_path, native, tok)
    llm_config = dict(json.loads((folder / "config.json").read_text())["llm_config"])
    llm_config.pop("architectures")
    reference = Qwen3ForCausalLM(Qwen3Config(**llm_config)).eval()
    weights = {k[len("language_model."):]: v for k, v in load_safetensors_folder(folder).items()
               if k.startswith("language_model.")}
    reference.load_state_dict(weights, strict=True)
    ids = torch.tensor([tok.convert_tokens_to_ids("<|im_start|> w10 w11 w12 <|im_end|> w13".split())])
    loaded = load_internvl(folder)
    torch.testing.assert_close(loaded(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["internvl3", "internvl3_5"])
def test_internvl3_family_tied_embeddings_roundtrip(family, tok, tmp_path):
    variant, llm = FAMILY[family]
    native = _tiny_native(variant, tok.convert_tokens_to_ids("<IMG_CONTEXT>"), llm=llm, tie=True)
    folder = _original_folder(tmp_path, native, tok)
    assert "language_model.lm_head.weight" not in load_safetensors_folder(folder)
    loaded = load_internvl(folder)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.language_model.embed_tokens.weight.data_ptr()
    inputs = _inputs(tok)
    torch.testing.assert_close(_logits(loaded, inputs), _logits(native, inputs), rtol=0, atol=0)


def test_internvl3_5_native_hf_folder_loads_directly(tok, tmp_path):
    """The '-hf' checkpoints (transformers' own layout, text_config model_type 'qwen3')."""
    native = _tiny_native("vit300m", tok.convert_tokens_to_ids("<IMG_CONTEXT>"), llm="qwen3")
    native.save_pretrained(tmp_path / "hf")
    loaded = load_internvl(tmp_path / "hf")
    assert loaded.config.text_config.model_type == "qwen3" and loaded.config.text_config.head_dim == 24
    inputs = _inputs(tok)
    torch.testing.assert_close(_logits(loaded, inputs), _logits(native, inputs), rtol=0, atol=0)


# The llm_config fields InternVL3.5's config.json carries for its Qwen3 LLM (values of a tiny one):
# head_dim given, no rope_scaling, the remote code's training-time entries.
INTERNVL3_5_LLM = {
    "_name_or_path": "Qwen/Qwen3-1.7B", "architectures": ["Qwen3ForCausalLM"], "attention_bias": False,
    "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 24, "hidden_act": "silu",
    "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128, "max_position_embeddings": 40960,
    "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 4, "num_hidden_layers": 2,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": False,
    "use_sliding_window": False, "vocab_size": VOCAB, "_attn_implementation_autoset": True,
}


def test_internvl3_5_llm_config_converts():
    config = json.loads(json.dumps(INTERNVL2_5_1B))
    config["llm_config"] = dict(INTERNVL3_5_LLM)
    native = internvl_config_from_original(config, image_token_id=5)
    text = native.text_config
    assert isinstance(text, Qwen3Config) and text.head_dim == 24 and text.use_cache is True
    assert text.rope_parameters["rope_theta"] == 1000000 and text.rope_parameters["rope_type"] == "default"
    assert native.template == "internvl2_5" and native.image_seq_length == 256
    assert internvl_config_from_original(internvl_config_to_original(native), 5).to_dict() == native.to_dict()


@pytest.mark.parametrize("arch", ["InternLM2ForCausalLM", "InternLM3ForCausalLM", "Qwen3MoeForCausalLM",
                                  "GptOssForCausalLM", "Phi3ForCausalLM"])
def test_other_llms_are_refused_by_name(arch):
    """InternVL2.5-2B/8B/26B (InternLM2, fused wqkv), InternVL3-9B (InternLM3), InternVL3.5-30B-A3B /
    241B-A28B (Qwen3 MoE), InternVL3.5-GPT-OSS-20B-A4B and Phi-3 (Mini-InternVL) are not converted."""
    config = json.loads(json.dumps(INTERNVL2_5_1B))
    config["llm_config"]["architectures"] = [arch]
    with pytest.raises(ValueError, match=rf"LLM {arch} is not supported \(supported: .*Qwen3ForCausalLM"):
        internvl_config_from_original(config, image_token_id=151667)
