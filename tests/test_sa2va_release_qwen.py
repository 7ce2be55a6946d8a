"""Sa2VA's Qwen-VL releases (Sa2VA-Qwen2_5-VL-3B / -7B, Sa2VA-Qwen3-VL-4B) in, without remote code.

Per family a tiny folder is written in the release layout, following Sa2VA's public code
(bytedance/Sa2VA ``tools/convert_to_hf.py`` and ``projects/sa2va/hf/models_qwen2_5_vl`` /
``models_qwen3vl``): the Qwen-VL model under ``model.`` in transformers' module names
(``model.model.visual.*``, ``model.model.language_model.*``, ``model.lm_head.*``), Meta's SAM2Base
under ``grounding_encoder.sam2_model.`` (``g_weight``, sam2.0 keys), ``text_hidden_fcs``, sharded
safetensors, config.json (the Qwen-VL config with ``model_type: sa2va_chat``,
``architectures: [Sa2VAChatModelQwen]``, ``auto_map``, ``template``), the tokenizer with Sa2VA's five
tokens after the base model's, and the processor's chat template / preprocessor config.

References are computed without the loader: the source Qwen-VL model's logits and last hidden states
(its own forward, its own rotary positions), ``text_hidden_fcs`` by hand from the folder's tensors,
and Meta's SAM2Base running Sa2VA's language decode (test_sa2va_release.meta_language_decode).
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from PIL import Image
from torch import nn

pytest.importorskip("sam2", reason="Meta's sam2 is a test-only extra: see requirements-test.txt")

from test_convert_internvl import _rewrite  # noqa: E402
from test_sa2va_release import SAM2_V21_ONLY, SA2VA_ADDED, TINY_SAM2, meta_language_decode  # noqa: E402
from tiny_meta_sam2 import meta_small_sam2  # noqa: E402
from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen3VLConfig,  # noqa: E402
                          Qwen3VLForConditionalGeneration)

from projects.salma.datasets.collate import expand_eval_sample  # noqa: E402
from projects.salma.datasets.tokenizer import build_tiny_tokenizer  # noqa: E402
from projects.salma.datasets.vision_inputs import CLIP_MEAN, CLIP_STD, QwenVLPatches  # noqa: E402
from projects.salma.models import sa2va_release  # noqa: E402
from projects.salma.models.convert.common import CheckpointMismatchError, load_safetensors_folder  # noqa: E402
from projects.salma.models.convert.sa2va_qwen import SA2VA_QWEN_PIXELS, save_sa2va_qwen_layout  # noqa: E402
from projects.salma.models.pretrained import pretrained_submodule_cfgs  # noqa: E402
from projects.salma.registry import MODELS  # noqa: E402
from projects.salma.salma_model import SALMAModel  # noqa: E402
from projects.salma.testing import forced_answer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = {"qwen2_5_vl": "configs/tiny/salma_tiny_qwen_vl.py", "qwen3_vl": "configs/tiny/salma_tiny_qwen3_vl.py"}
CLASSES = {"qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
           "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration)}
# Qwen's own added tokens between the vision ones and Sa2VA's (a tokenizer without them puts [SEG] elsewhere)
QWEN_OTHER_TOKENS = ["<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|video_pad|>"]
HELPFUL = "You are a helpful assistant."
# A chat template with the structure of Qwen2.5-VL's (a default system message, images as vision
# blocks before the text); Qwen3-VL's has no default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}{DEFAULT}{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEFAULT_SYSTEM = {"qwen2_5_vl": f"<|im_start|>system\n{HELPFUL}<|im_end|>\n", "qwen3_vl": ""}
STATS = {"qwen2_5_vl": (list(CLIP_MEAN), list(CLIP_STD)), "qwen3_vl": ([0.5] * 3, [0.5] * 3)}
ANSWER = "Sure, [SEG]."


def tiny_arch(family: str, vocab: int) -> dict:
    """The tiny config's Qwen-VL architecture with the release's vocabulary and untied head."""
    config = Config.fromfile(str(ROOT / TINY[family])).model.mllm.config.to_dict()
    assert config.pop("model_type") == family
    config["text_config"]["vocab_size"] = vocab
    config["tie_word_embeddings"] = False
    return config


def baseline_cfg(folder, family: str) -> dict:
    """configs/Sa2VA-Qwen*.py's model at tiny size: no LoRA, CMA, prior; weights from ``folder``."""
    return dict(
        type="VideoLLaVASAMModel", pretrained=str(folder),
        mllm=dict(type="QwenVLMLLM", tokenizer=dict(type="load_pretrained_tokenizer", path=str(folder)),
                  config=dict(model_type=family), llm_lora=None),
        grounding_encoder=dict(type="SAM2GroundingRunner", sam2=dict(config=TINY_SAM2), enable_cma=False,
                               mask_source="none"),
        num_points=256,
    )


def salma_cfg(folder, family: str) -> dict:
    """The tiny SALMA Qwen-VL config (LoRA, CMA + MBA gate, TMC, boundary) with model.pretrained=folder."""
    model = Config.fromfile(str(ROOT / TINY[family])).model.to_dict()
    model["pretrained"] = str(folder)
    model["mllm"]["tokenizer"] = dict(type="load_pretrained_tokenizer", path=str(folder))
    model["grounding_encoder"]["sam2"] = dict(config=TINY_SAM2)
    model["num_points"] = 256
    return model


def image_token_types(release, input_ids: torch.Tensor) -> torch.Tensor:
    """What transformers' Qwen-VL processor returns beside the ids (1 on image tokens): the source
    model computes its multimodal rotary positions from it."""
    return (input_ids == release.tok.convert_tokens_to_ids("<|image_pad|>")).int()


def build(cfg: dict):
    torch.manual_seed(0)
    return MODELS.build(copy.deepcopy(cfg)).eval()


# ------------------------------------------------------------------ the tiny release folders
@pytest.fixture(scope="module", params=sorted(TINY))
def release(request, tmp_path_factory) -> SimpleNamespace:
    family = request.param
    tok = build_tiny_tokenizer(family="qwen_vl")  # the vision tokens among the base model's added tokens
    tok.add_tokens(QWEN_OTHER_TOKENS, special_tokens=True)
    base_vocab = len(tok)
    tok.add_tokens(SA2VA_ADDED, special_tokens=True)  # Sa2VA's add_special_tokens, then resize to len(tokenizer)
    config_cls, model_cls = CLASSES[family]
    torch.manual_seed(2)
    source = model_cls(config_cls(**tiny_arch(family, len(tok)))).eval()
    ids = tok.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"])
    source.config.image_token_id, source.config.video_token_id = ids[0], ids[1]
    source.config.vision_start_token_id, source.config.vision_end_token_id = ids[2], ids[3]
    meta = meta_small_sam2()
    meta_sd = {k: v for k, v in meta.state_dict().items() if k not in SAM2_V21_ONLY}
    width = source.config.text_config.hidden_size
    torch.manual_seed(3)
    fcs = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, 256), nn.Dropout(0.0)).eval()
    folder = tmp_path_factory.mktemp(f"release_{family}") / f"Sa2VA-tiny-{family}"
    vision = source.config.vision_config
    mean, std = STATS[family]
    preprocessor = dict(image_processor_type="Qwen2VLImageProcessor", image_mean=mean, image_std=std,
                        patch_size=vision.patch_size, merge_size=vision.spatial_merge_size,
                        temporal_patch_size=vision.temporal_patch_size, min_pixels=3136, max_pixels=12845056)
    save_sa2va_qwen_layout(folder, qwen=source, sam2_state_dict=meta_sd, text_hidden_fcs=fcs.state_dict(),
                           tokenizer=tok, chat_template=CHAT_TEMPLATE.replace("{DEFAULT}", DEFAULT_SYSTEM[family]),
                           preprocessor=preprocessor, num_shards=3)
    return SimpleNamespace(family=family, folder=folder, tok=tok, base_vocab=base_vocab, source=source, meta=meta,
                           fcs=fcs, weights=load_safetensors_folder(folder))


@pytest.fixture(scope="module")
def baseline(release):
    return build(baseline_cfg(release.folder, release.family))


@pytest.fixture(scope="module")
def exported(release):
    """SALMAModel.from_pretrained on the folder; SAM-2's hard-coded size replaced by the tiny one and
    the video protocol by decode_all (tiny memory modules are untrained)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sa2va_release, "SA2VA_SAM2", dict(config=TINY_SAM2))
        mp.setattr(sa2va_release, "SA2VA_TEST_OPTIONS", dict(sa2va_release.SA2VA_TEST_OPTIONS, propagation="decode_all"))
        return SALMAModel.from_pretrained(str(release.folder), device="cpu")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)


def test_folder_is_written_in_sa2vas_qwen_release_layout(release):
    config = json.loads((release.folder / "config.json").read_text())
    assert config["architectures"] == ["Sa2VAChatModelQwen"] and config["model_type"] == "sa2va_chat"
    assert config["auto_map"]["AutoModel"] == "modeling_sa2va_qwen.Sa2VAChatModelQwen"
    assert config["template"] == "qwen_chat" and config["tie_word_embeddings"] is False
    assert config["text_config"]["vocab_size"] == len(release.tok)
    assert config["text_config"]["model_type"] == {"qwen2_5_vl": "qwen2_5_vl_text", "qwen3_vl": "qwen3_vl_text"}[
        release.family]
    index = json.loads((release.folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) == 3
    for key in ("model.model.visual.blocks.1.attn.qkv.weight", "model.model.language_model.layers.1.self_attn.q_proj.weight",
                "model.model.language_model.embed_tokens.weight", "model.lm_head.weight",
                "grounding_encoder.sam2_model.memory_encoder.fuser.layers.0.g_weight",
                "grounding_encoder.sam2_model.sam_mask_decoder.conv_s0.weight", "text_hidden_fcs.2.bias"):
        assert key in index, key
    assert not any(k.endswith(".gamma") or "no_obj_embed_spatial" in k for k in index)
    ids = [release.tok.convert_tokens_to_ids(t) for t in SA2VA_ADDED]
    assert ids == list(range(release.base_vocab, release.base_vocab + 5))


def test_submodule_configs_come_from_the_folder(release):
    mllm, grounding = pretrained_submodule_cfgs(str(release.folder), dict(type="QwenVLMLLM", tokenizer={}),
                                                dict(sam2=dict(config=TINY_SAM2)))
    assert mllm["model_path"] is None and mllm["config"]["model_type"] == release.family
    assert mllm["config"]["text_config"]["vocab_size"] == len(release.tok)
    assert grounding["sam2"] == dict(config=TINY_SAM2, checkpoint=str(release.folder))
    with pytest.raises(ValueError, match="Sa2VA Qwen-VL release but model.mllm.type is 'InternVLMLLM'"):
        pretrained_submodule_cfgs(str(release.folder), dict(type="InternVLMLLM"), dict(sam2={}))


# ------------------------------------------------------------------ every tensor where it belongs
@torch.no_grad()
def test_qwen_part_gives_the_source_models_logits(release, baseline):
    model = baseline.mllm.model
    assert type(model) is type(release.source) and model.config.model_type == release.family
    vision = QwenVLPatches(**{k: v for k, v in sa2va_release.sa2va_baseline_config(release.folder).test_dataloader
                              .dataset.vision.items() if k != "family"})
    x = vision.image(Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)))
    text = f"<|im_start|>user\n{x.prefix}the red circle<|im_end|>\n<|im_start|>assistant\n"
    input_ids = release.tok(text, return_tensors="pt").input_ids
    inputs = dict(input_ids=input_ids, pixel_values=x.pixel_values, image_grid_thw=x.grid_thw,
                  mm_token_type_ids=image_token_types(release, input_ids))
    ours, reference = model(**inputs).logits, release.source(**inputs).logits
    print(f"{release.family}: logits max |diff| = {(ours - reference).abs().max().item():.3g}")
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    w = release.weights
    assert torch.equal(model.lm_head.weight, w["model.lm_head.weight"])
    assert torch.equal(model.get_input_embeddings().weight, w["model.model.language_model.embed_tokens.weight"])
    assert not torch.equal(model.lm_head.weight, model.get_input_embeddings().weight)


def test_token_ids_are_the_folders_own(release, baseline):
    tok = baseline.tokenizer
    assert len(tok) == len(release.tok) == baseline.mllm.model.get_input_embeddings().num_embeddings
    assert baseline.mllm.seg_token_id == release.base_vocab == release.tok.convert_tokens_to_ids("[SEG]")
    assert baseline.mllm.model.config.image_token_id == release.tok.convert_tokens_to_ids("<|image_pad|>")


@torch.no_grad()
def test_text_hidden_fcs_loaded_as_is(release, baseline):
    x = torch.randn(5, release.source.config.text_config.hidden_size, generator=torch.Generator().manual_seed(2))
    w = release.weights
    by_hand = F.linear(F.relu(F.linear(x, w["text_hidden_fcs.0.weight"], w["text_hidden_fcs.0.bias"])),
                       w["text_hidden_fcs.2.weight"], w["text_hidden_fcs.2.bias"])
    torch.testing.assert_close(baseline.text_hidden_fcs(x), by_hand, rtol=0, atol=0)


# ------------------------------------------------------------------ the baseline, as Sa2VA's predict_forward runs it
def test_baseline_takes_sa2vas_inference_settings(release, exported):
    config = exported.config
    assert config.qwen_vl["model_type"] == release.family and config.internvl is None
    vision = release.source.config.vision_config
    mean, std = STATS[release.family]
    low, high = SA2VA_QWEN_PIXELS
    assert config.inputs["vision"] == dict(
        family="qwen_vl", patch_size=vision.patch_size, merge_size=vision.spatial_merge_size,
        temporal_patch_size=vision.temporal_patch_size, min_pixels=low, max_pixels=high, video_min_pixels=low,
        video_max_pixels=high, image_mean=mean, image_std=std)
    assert config.inputs["system"] == {"qwen2_5_vl": HELPFUL, "qwen3_vl": ""}[release.family]
    assert config.inputs["sam_pixel_stats"] == "sa2va_release"
    assert config.grounding == {"enable_cma": False, "mask_source": "none", "mask_token": "best_iou"}
    options = sa2va_release.sa2va_baseline_config(release.folder).test_options
    assert (options.num_llm_frames, options.llm_frame_sampling, options.propagation) == (5, "first", "memory")


def test_from_pretrained_loads_every_tensor_from_the_folder(release, baseline, exported):
    ours, reference = exported.model.state_dict(), baseline.state_dict()
    assert set(ours) == set(reference)
    assert [k for k in ours if not torch.equal(ours[k], reference[k])] == []


@torch.no_grad()
def test_predict_equals_sa2va_computed_from_the_source_weights(release, exported, image):
    item = exported.reader.image_item(image, ["the red circle"])
    data = exported._batch(expand_eval_sample(item))
    with forced_answer(ANSWER):
        out = exported.predict(image=image, text="the red circle")
        result = exported.model.predict(data, 8, keep_queries=True)[0]
        prompt = data["input_ids"][0][data["attention_mask"][0].bool()][None]
        new, hidden = exported.model.mllm.generate(prompt, torch.ones_like(prompt), data["pixel_values"], 8,
                                                   image_grid_thw=data["image_grid_thw"], return_hidden=True)
    assert out["text"].startswith("Sure, [SEG]") and out["masks"].shape == (1, 96, 128)
    # the source model's own forward on prompt + answer (its own rotary positions), the [SEG] state
    answer = release.tok(ANSWER, add_special_tokens=False, return_tensors="pt").input_ids[0]
    full = torch.cat([prompt[0], answer])[None]
    reference = release.source.model(input_ids=full, pixel_values=data["pixel_values"],
                                     image_grid_thw=data["image_grid_thw"],
                                     mm_token_type_ids=image_token_types(release, full)).last_hidden_state[0]
    seg_at = (full[0] == release.tok.convert_tokens_to_ids("[SEG]")).nonzero().flatten()
    diff_hidden = (hidden[0, seg_at] - reference[seg_at]).abs().max().item()
    torch.testing.assert_close(hidden[0, seg_at], reference[seg_at], atol=1e-4, rtol=1e-4)
    # text_hidden_fcs by hand from the folder's tensors
    w = release.weights
    seg = F.linear(F.relu(F.linear(reference[seg_at], w["text_hidden_fcs.0.weight"], w["text_hidden_fcs.0.bias"])),
                   w["text_hidden_fcs.2.weight"], w["text_hidden_fcs.2.bias"])  # (1, 256)
    diff_seg = (result["queries"].seg - seg).abs().max().item()
    torch.testing.assert_close(result["queries"].seg, seg, atol=1e-4, rtol=1e-4)
    # Meta's SAM2Base running Sa2VA's language decode on the source SAM-2 weights
    expected = meta_language_decode(release.meta, data["g_pixel_values"][0], seg)
    logits = result["mask_logits"]  # (1, 1, h, w)
    diff_mask = (logits[:, 0] - expected[:, 0]).abs().max().item()
    print(f"{release.family}: max |diff| [SEG] state {diff_hidden:.3g}, embedding {diff_seg:.3g}, "
          f"low-res mask {diff_mask:.3g}")
    torch.testing.assert_close(logits[:, 0], expected[:, 0], atol=1e-4, rtol=1e-4)
    assert torch.equal(out["masks"], (F.interpolate(logits, size=(96, 128), mode="bilinear") > 0)[:, 0])
    # the prompt is Sa2VA's chat: the folder's default system message (Qwen2.5-VL's), then the image
    text = release.tok.decode(prompt[0])
    assert text.startswith(DEFAULT_SYSTEM[release.family] + "<|im_start|>user\n<|vision_start|><|image_pad|>")


# ------------------------------------------------------------------ SALMA training from the release
def test_salma_starts_from_the_release_with_fresh_cma_and_predicts_as_it(release, baseline, exported, image):
    salma = build(salma_cfg(release.folder, release.family))
    cma = salma.grounding_encoder.cma
    assert cma is not None and float(cma.gamma_attn.detach()) == 0.0
    shared = {k: v for k, v in salma.state_dict().items() if "lora_" not in k and not k.startswith("grounding_encoder.cma.")}
    base = {k.replace(".base_layer.", "."): v for k, v in shared.items()}
    reference = baseline.state_dict()
    assert set(base) == set(reference)
    assert [k for k in base if not torch.equal(base[k], reference[k])] == []
    assert any("lora_B" in n for n, _ in salma.named_parameters())
    assert all(not p.detach().any() for n, p in salma.named_parameters() if "lora_B" in n)
    data = exported._batch(expand_eval_sample(exported.reader.image_item(image, ["the red circle"])))
    with forced_answer(ANSWER), torch.no_grad():
        start, sa2va = salma.predict(data, 8)[0], baseline.predict(data, 8)[0]
    assert start["mask_logits"].shape[0] == 1
    torch.testing.assert_close(start["mask_logits"], sa2va["mask_logits"], rtol=0, atol=0)


# ------------------------------------------------------------------ refused, by name
def copy_release(release, tmp_path, edit=None) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(release.folder, folder)
    if edit is not None:
        _rewrite(folder, edit)
    return folder


@pytest.mark.parametrize("key", ["grounding_encoder.cma.gamma_attn", "lm_head.weight",
                                 "model.model.visual.blocks.0.extra.weight"],
                         ids=["salma_cma_weight", "unknown_prefix", "unknown_qwen_key"])
def test_unknown_extra_key_is_refused_by_name(release, tmp_path, key):
    folder = copy_release(release, tmp_path, lambda sd: sd.__setitem__(key, torch.zeros(2)))
    with pytest.raises(CheckpointMismatchError, match=key.replace(".", r"\.")) as err:
        build(baseline_cfg(folder, release.family))
    assert key in err.value.unexpected


@pytest.mark.parametrize("key,reported", [
    ("text_hidden_fcs.2.bias", "text_hidden_fcs.2.bias"),
    ("grounding_encoder.sam2_model.sam_mask_decoder.conv_s0.weight", "mask_decoder.conv_s0.weight"),
    ("model.model.language_model.norm.weight", "model.model.language_model.norm.weight"),
    ("model.model.visual.blocks.1.attn.proj.bias", "model.model.visual.blocks.1.attn.proj.bias"),
], ids=["text_hidden_fcs", "sam2", "llm", "vision"])
def test_missing_key_is_refused_by_name(release, tmp_path, key, reported):
    folder = copy_release(release, tmp_path, lambda sd: sd.pop(key))
    with pytest.raises(CheckpointMismatchError, match=reported.replace(".", r"\.")) as err:
        build(baseline_cfg(folder, release.family))
    assert err.value.missing == [reported] and str(folder) in str(err.value)


def test_seg_id_of_another_tokenizer_is_refused(release):
    """A tokenizer without Qwen's other added tokens puts [SEG] on another embedding row."""
    cfg = baseline_cfg(release.folder, release.family)
    cfg["mllm"]["tokenizer"] = dict(type="build_tiny_tokenizer", family="qwen_vl")
    ours = release.base_vocab - len(QWEN_OTHER_TOKENS)
    with pytest.raises(ValueError, match=rf"'\[SEG\]' is id {ours} in the model's tokenizer but {release.base_vocab}"):
        build(cfg)


def test_transformers_before_4_52_names_are_read_too(release, tmp_path, baseline):
    """``model.visual.*`` / ``model.model.layers.*`` (Qwen2.5-VL saved by transformers < 4.52)."""
    def legacy(sd):
        for key in [k for k in sd if k.startswith("model.model.")]:
            sd[key.replace("model.model.visual.", "model.visual.").replace("model.model.language_model.", "model.model.")] \
                = sd.pop(key)
    folder = copy_release(release, tmp_path, legacy)
    assert "model.visual.blocks.0.attn.qkv.weight" in json.loads((folder / "model.safetensors.index.json").read_text())[
        "weight_map"]
    model = build(baseline_cfg(folder, release.family))
    ours, reference = model.state_dict(), baseline.state_dict()
    assert [k for k in reference if not torch.equal(ours[k], reference[k])] == []


def test_internvl_loader_refuses_a_qwen_release_by_name(release):
    cfg = baseline_cfg(release.folder, release.family)
    cfg["mllm"] = dict(type="InternVLMLLM", tokenizer=cfg["mllm"]["tokenizer"], llm_lora=None)
    with pytest.raises(ValueError, match="Sa2VA Qwen-VL release"):
        build(cfg)
