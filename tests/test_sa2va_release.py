"""Published Sa2VA release folders in, without remote code.

A tiny folder is written in Sa2VA's release layout, following its public modeling code
(bytedance/Sa2VA ``projects/sa2va/hf/models``): InternVL2.5 in the original layout (fused qkv),
Meta's SAM2Base state dict under ``grounding_encoder.sam2_model.`` with the memory fuser's
``gamma`` saved as ``g_weight`` and the sam2.0 key set Sa2VA hard-codes, ``text_hidden_fcs``,
sharded safetensors with an index, config.json with ``architectures`` / ``auto_map`` /
``template``, and a tokenizer with Sa2VA's five tokens appended after InternVL's.

What is loaded is compared with independent references, never with the loader itself: the source
InternVL's logits, InternVL's original vision path re-implemented on the folder's fused-qkv weights,
``text_hidden_fcs`` computed by hand from the folder's tensors, and Meta's own ``SAM2Base``
running Sa2VA's language decode (padding point + ``[SEG]`` embedding as sparse prompts) on the
source SAM-2 weights. Needs Meta's ``sam2`` package (test extra), like test_convert_sam2.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
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

from test_convert_internvl import _reference_image_features, _rewrite, _tiny_native  # noqa: E402
from test_convert_sam2 import _meta_image_features  # noqa: E402
from tiny_meta_sam2 import hf_image_config, hf_video_config, meta_small_sam2  # noqa: E402

from projects.salma.datasets.collate import expand_eval_sample  # noqa: E402
from projects.salma.datasets.tokenizer import build_tiny_tokenizer  # noqa: E402
from projects.salma.models import sa2va_release  # noqa: E402
from projects.salma.models.convert.common import CheckpointMismatchError, load_safetensors_folder  # noqa: E402
from projects.salma.models.convert.internvl import internvl_config_from_original  # noqa: E402
from projects.salma.models.convert.sa2va import SA2VA_TOKENS, sa2va_internvl_config, save_sa2va_layout  # noqa: E402
from projects.salma.models.convert.sam2 import load_sam2  # noqa: E402
from projects.salma.salma_model import SALMAModel  # noqa: E402
from projects.salma.registry import MODELS  # noqa: E402
from projects.salma.testing import forced_answer, make_batch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INTERNVL_TOKENS = ["<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]  # InternVL2.5 adds these after <IMG_CONTEXT>
SA2VA_ADDED = ["[SEG]", "<p>", "</p>", "<vp>", "</vp>"]  # Sa2VA's special_tokens, in its order
SAM2_V21_ONLY = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias")
TINY_SAM2 = hf_image_config().to_dict()  # Meta's decoder widths: 256 (the tiny SAM-2 of test_convert_sam2)
TILE, TILE_TOKENS, SAM_SIZE = 64, 4, 128
ANSWER = "Sure, [SEG]."


def video_config_sam2_0():
    """The tiny video config with sam2.0's memory settings (Sa2VA: no occlusion embedding, no
    temporal encoding of object pointers)."""
    config = hf_video_config()
    config.enable_occlusion_spatial_embedding = False
    config.enable_temporal_pos_encoding_for_object_pointers = False
    return config


def baseline_cfg(folder, **grounding) -> dict:
    """configs/Sa2VA-1B.py's model at tiny size: no LoRA, no CMA, no prior; weights from ``folder``."""
    return dict(
        type="VideoLLaVASAMModel",
        pretrained=str(folder),
        mllm=dict(type="InternVLMLLM", tokenizer=dict(type="load_pretrained_tokenizer", path=str(folder)),
                  llm_lora=None),
        grounding_encoder=dict(type="SAM2GroundingRunner", sam2=dict(config=TINY_SAM2), enable_cma=False,
                               mask_source="none", **grounding),
        num_points=256,
    )


def salma_cfg(folder) -> dict:
    """configs/tiny/salma_tiny.py (LoRA, CMA + MBA gate, TMC, boundary) with model.pretrained=folder."""
    model = Config.fromfile(str(ROOT / "configs/tiny/salma_tiny.py")).model.to_dict()
    model["pretrained"] = str(folder)
    model["mllm"]["tokenizer"] = dict(type="load_pretrained_tokenizer", path=str(folder))
    model["grounding_encoder"]["sam2"] = dict(config=TINY_SAM2)
    model["num_points"] = 256
    return model


def build(cfg: dict):
    torch.manual_seed(0)
    return MODELS.build(copy.deepcopy(cfg)).eval()


# ------------------------------------------------------------------ the tiny release folder
@pytest.fixture(scope="module")
def release(tmp_path_factory) -> SimpleNamespace:
    tok = build_tiny_tokenizer()  # <|endoftext|> <|im_start|> <|im_end|> <img> </img> <IMG_CONTEXT> first
    tok.add_tokens(INTERNVL_TOKENS, special_tokens=True)
    internvl_vocab = len(tok)
    tok.add_tokens(SA2VA_ADDED, special_tokens=True)  # what Sa2VA's InternVL_Slowfast.add_special_tokens does
    native = _tiny_native("vit300m", tok.convert_tokens_to_ids("<IMG_CONTEXT>"), vocab=len(tok), template="qwen_chat")
    meta = meta_small_sam2()
    meta_sd = {k: v for k, v in meta.state_dict().items() if k not in SAM2_V21_ONLY}  # Sa2VA's SAM-2 is sam2.0
    torch.manual_seed(3)
    fcs = nn.Sequential(nn.Linear(64, 64), nn.ReLU(inplace=True), nn.Linear(64, 256), nn.Dropout(0.0)).eval()
    folder = tmp_path_factory.mktemp("release") / "Sa2VA-tiny"
    save_sa2va_layout(folder, internvl=native, sam2_state_dict=meta_sd, text_hidden_fcs=fcs.state_dict(),
                      tokenizer=tok, num_shards=3)
    return SimpleNamespace(folder=folder, tok=tok, internvl_vocab=internvl_vocab, native=native, meta=meta, fcs=fcs,
                           weights=load_safetensors_folder(folder))


@pytest.fixture(scope="module")
def baseline(release):
    return build(baseline_cfg(release.folder))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported(release):
    """SALMAModel.from_pretrained on the release folder; what Sa2VA's code hard-codes (SAM-2 size,
    video protocol) replaced by the tiny SAM-2 and decode_all (tiny memory modules are untrained)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sa2va_release, "SA2VA_SAM2", dict(config=TINY_SAM2))
        mp.setattr(sa2va_release, "SA2VA_TEST_OPTIONS", dict(sa2va_release.SA2VA_TEST_OPTIONS, propagation="decode_all"))
        return SALMAModel.from_pretrained(str(release.folder), device="cpu")


def test_folder_is_written_in_sa2vas_release_layout(release):
    config = json.loads((release.folder / "config.json").read_text())
    assert config["architectures"] == ["Sa2VAChatModel"] and config["model_type"] == "sa2va_chat"
    assert config["auto_map"]["AutoModel"] == "modeling_sa2va_chat.Sa2VAChatModel"
    assert config["llm_config"]["vocab_size"] == len(release.tok) and config["template"] == "qwen_chat"
    index = json.loads((release.folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) == 3
    for key in ("vision_model.encoder.layers.1.attn.qkv.weight", "mlp1.3.weight", "language_model.lm_head.weight",
                "language_model.model.embed_tokens.weight",
                "grounding_encoder.sam2_model.memory_encoder.fuser.layers.0.g_weight",
                "grounding_encoder.sam2_model.sam_mask_decoder.conv_s0.weight",
                "grounding_encoder.sam2_model.image_encoder.trunk.blocks.3.attn.qkv.weight",
                "text_hidden_fcs.0.weight", "text_hidden_fcs.2.bias"):
        assert key in index, key
    assert not any(k.endswith(".gamma") or "no_obj_embed_spatial" in k for k in index)
    # Sa2VA's tokens right after InternVL's vocabulary, in its order (Sa2VA-1B: [SEG] = 151674)
    ids = [release.tok.convert_tokens_to_ids(t) for t in SA2VA_ADDED]
    assert ids == list(range(release.internvl_vocab, release.internvl_vocab + 5))


# ------------------------------------------------------------------ every tensor where it belongs
@torch.no_grad()
def test_internvl_part_lands_in_the_native_model(release, baseline):
    model = baseline.mllm.model
    gen = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(1, 3, TILE, TILE, generator=gen)
    image = "<img>" + "<IMG_CONTEXT>" * TILE_TOKENS + "</img>"
    input_ids = release.tok(f"<|im_start|>user\n{image}\nthe red circle<|im_end|>", return_tensors="pt").input_ids
    torch.testing.assert_close(model(input_ids=input_ids, pixel_values=pixel_values).logits,
                               release.native(input_ids=input_ids, pixel_values=pixel_values).logits, rtol=0, atol=0)
    # the fused qkv split in the right order: InternVL's own vision path on the folder's weights
    config = json.loads((release.folder / "config.json").read_text())
    expected = _reference_image_features(release.weights, config, pixel_values)
    torch.testing.assert_close(model.model.get_image_features(pixel_values).pooler_output, expected,
                               atol=1e-5, rtol=1e-5)
    # Sa2VA-1B's LM head is its own matrix, not the input embeddings
    assert torch.equal(model.lm_head.weight, release.weights["language_model.lm_head.weight"])
    assert torch.equal(model.get_input_embeddings().weight, release.weights["language_model.model.embed_tokens.weight"])
    assert not torch.equal(model.lm_head.weight, model.get_input_embeddings().weight)


def test_the_tokenizer_loads_without_asking_to_run_the_remote_code(release, monkeypatch):
    """config.json's auto_map names Sa2VA's remote code: transformers must not even ask."""
    from projects.salma.datasets.tokenizer import load_pretrained_tokenizer

    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "n")
    tok = load_pretrained_tokenizer(str(release.folder))
    assert asked == [] and tok.convert_tokens_to_ids("[SEG]") == release.internvl_vocab


def test_token_ids_are_the_folders_own(release, baseline):
    tok = baseline.tokenizer
    assert len(tok) == len(release.tok) == baseline.mllm.model.get_input_embeddings().num_embeddings
    for token in SA2VA_TOKENS:
        assert tok.convert_tokens_to_ids(token) == release.tok.convert_tokens_to_ids(token), token
    assert baseline.mllm.seg_token_id == release.internvl_vocab
    assert baseline.mllm.model.config.image_token_id == release.tok.convert_tokens_to_ids("<IMG_CONTEXT>")


@torch.no_grad()
def test_text_hidden_fcs_loaded_as_is(release, baseline):
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(2))
    w = release.weights
    by_hand = F.linear(F.relu(F.linear(x, w["text_hidden_fcs.0.weight"], w["text_hidden_fcs.0.bias"])),
                       w["text_hidden_fcs.2.weight"], w["text_hidden_fcs.2.bias"])
    torch.testing.assert_close(baseline.text_hidden_fcs(x), by_hand, rtol=0, atol=0)


class _SparseWithLanguage(nn.Module):
    """Meta's prompt encoder with Sa2VA's one extension of ``_forward_sam_heads``: the language
    embedding appended to the sparse prompt tokens (``language_embd``)."""

    def __init__(self, encoder: nn.Module, language: torch.Tensor) -> None:
        super().__init__()
        self.encoder, self.language = encoder, language  # language: (B, 1, C)
        self.mask_input_size = encoder.mask_input_size

    def forward(self, points, boxes, masks):
        sparse, dense = self.encoder(points=points, boxes=boxes, masks=masks)
        return torch.cat([sparse, self.language], dim=1), dense

    def get_dense_pe(self):
        return self.encoder.get_dense_pe()


def meta_language_decode(meta, frames: torch.Tensor, seg: torch.Tensor, *, mask_token: str = "best_iou") -> torch.Tensor:
    """Sa2VA's language decode computed by Meta's ``SAM2Base._forward_sam_heads``: no point (a
    padding point, label -1) plus the [SEG] embedding as sparse prompts, features with no_mem_embed.
    -> (1, 1, h, w) logits.

    ``'best_iou'``: ``multimask_output=_use_multimask(is_init_cond_frame=True, point_inputs=None)``
    as both originals call it (True for the shipped SAM-2 config: Meta keeps the highest predicted
    IoU of tokens 1-3); ``'first'``: ``multimask_output=False`` with Meta's eval-mode stability swap
    off, i.e. mask token 0."""
    feats, _ = _meta_image_features(meta, frames)
    decoder = meta.sam_mask_decoder
    assert not decoder.training and decoder.dynamic_multimask_via_stability  # sam2.1's setting, eval mode
    multimask = meta._use_multimask(is_init_cond_frame=True, point_inputs=None)
    assert multimask  # multimask_output_in_sam=True, multimask_min/max_pt_num=0/1, as Sa2VA's sam2_hiera_l.yaml
    encoder = meta.sam_prompt_encoder
    meta.sam_prompt_encoder = _SparseWithLanguage(encoder, seg[:, None])
    decoder.dynamic_multimask_via_stability = False  # only reached with multimask_output=False
    try:
        out = meta._forward_sam_heads(backbone_features=feats[-1], point_inputs=None, mask_inputs=None,
                                      high_res_features=feats[:-1], multimask_output=mask_token == "best_iou")
    finally:
        meta.sam_prompt_encoder = encoder
        decoder.dynamic_multimask_via_stability = True
    return out[3]  # low_res_masks: the kept mask


def meta_token0_stability(meta, frames: torch.Tensor, seg: torch.Tensor) -> float:
    """Meta's stability score of mask token 0 for the same decode (what its eval-mode swap reads)."""
    feats, _ = _meta_image_features(meta, frames)
    sparse, dense = meta.sam_prompt_encoder(points=(torch.zeros(1, 1, 2), -torch.ones(1, 1, dtype=torch.int32)),
                                            boxes=None, masks=None)
    decoder = meta.sam_mask_decoder
    decoder.dynamic_multimask_via_stability = False
    try:
        masks, *_ = decoder(image_embeddings=feats[-1], image_pe=meta.sam_prompt_encoder.get_dense_pe(),
                            sparse_prompt_embeddings=torch.cat([sparse, seg[:, None]], dim=1),
                            dense_prompt_embeddings=dense, multimask_output=False, repeat_image=False,
                            high_res_features=feats[:-1])
    finally:
        decoder.dynamic_multimask_via_stability = True
    return float(decoder._get_stability_scores(masks[:, 0]))


@torch.no_grad()
@pytest.mark.parametrize("mask_token", ["best_iou", "first"])
def test_sam2_part_decodes_as_metas_sam2(release, baseline, mask_token):
    """The language decode of each rule on Meta's SAM-2 (``_forward_sam_heads``), with an input on
    which the rules disagree."""
    gen = torch.Generator().manual_seed(4)
    frames, seg = torch.randn(1, 3, SAM_SIZE, SAM_SIZE, generator=gen), torch.randn(1, 256, generator=gen)
    runner = copy.deepcopy(baseline.grounding_encoder)
    runner.mask_token = mask_token
    ours = runner.decode(runner.encode_frames(frames), torch.zeros(1, dtype=torch.long), seg)
    expected = meta_language_decode(release.meta, frames, seg, mask_token=mask_token)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
    other = meta_language_decode(release.meta, frames, seg, mask_token="first" if mask_token == "best_iou" else "best_iou")
    assert (expected - other).abs().max() > 1.0  # the test can tell the two rules apart


@torch.no_grad()
def test_best_iou_is_kept_where_token0_is_stable(release, baseline):
    """The case the stability swap got wrong: token 0's mask is stable (>= 0.98, Meta's threshold),
    so an eval-mode ``multimask_output=False`` decode keeps token 0; Sa2VA keeps the best-IoU mask of
    tokens 1-3, and so must we, in train() and eval() alike.

    Random weights give token 0 a stability of at most ~0.97 on noise, so token 0's hypernetwork
    output is scaled by 20 (sharper logits) in both models alike: still the same weights."""
    meta, runner = copy.deepcopy(release.meta), copy.deepcopy(baseline.grounding_encoder)
    for linear in (meta.sam_mask_decoder.output_hypernetworks_mlps[0].layers[-1],
                   runner.sam2.mask_decoder.output_hypernetworks_mlps[0].proj_out):
        linear.weight.mul_(20.0), linear.bias.mul_(20.0)
    gen = torch.Generator().manual_seed(4)
    frames, seg = torch.randn(1, 3, SAM_SIZE, SAM_SIZE, generator=gen), torch.randn(1, 256, generator=gen)
    assert meta_token0_stability(meta, frames, seg) >= 0.98
    expected = meta_language_decode(meta, frames, seg)
    token0 = meta_language_decode(meta, frames, seg, mask_token="first")
    assert (expected - token0).abs().max() > 1.0
    assert runner.mask_token == "best_iou"  # the default
    for training in (False, True):
        runner.train(training)
        ours = runner.decode(runner.encode_frames(frames), torch.zeros(1, dtype=torch.long), seg)
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_memory_modules_for_video_tracking_land_too(release):
    """The tracker's memory modules come from the same folder (the fuser's g_weight included)."""
    video = load_sam2(release.folder, target="video", config=video_config_sam2_0())
    assert torch.equal(video.memory_encoder.memory_fuser.layers[0].scale,
                       release.weights["grounding_encoder.sam2_model.memory_encoder.fuser.layers.0.g_weight"])
    gen = torch.Generator().manual_seed(5)
    pix, mask = torch.randn(1, 256, 8, 8, generator=gen), torch.randn(1, 1, SAM_SIZE, SAM_SIZE, generator=gen)
    expected = release.meta.memory_encoder(pix, mask, skip_mask_sigmoid=True)
    features, positions = video.memory_encoder(pix, mask)
    torch.testing.assert_close(features, expected["vision_features"], atol=1e-4, rtol=1e-4)
    tokens = torch.randn(3, 256, generator=gen)
    torch.testing.assert_close(video.object_pointer_proj(tokens), release.meta.obj_ptr_proj(tokens), atol=1e-5, rtol=1e-5)


def test_evaluation_and_export_take_the_trackers_memory_modules_from_the_release(release):
    from projects.salma.build import sam2_weights_of

    cfg = baseline_cfg(release.folder)
    cfg["grounding_encoder"]["sam2"]["checkpoint"] = "checkpoints/sam2.1_hiera_large.pt"  # replaced by pretrained
    assert sam2_weights_of(cfg) == str(release.folder)
    del cfg["pretrained"]
    assert sam2_weights_of(cfg) == "checkpoints/sam2.1_hiera_large.pt"


# ------------------------------------------------------------------ predict: the baseline, end to end
def test_from_pretrained_is_the_sa2va_baseline_with_every_tensor_from_the_folder(release, baseline, exported):
    assert exported.config.grounding == {"enable_cma": False, "mask_source": "none", "mask_token": "best_iou"}
    assert exported.config.inputs["sam_pixel_stats"] == "sa2va_release"
    assert exported.model.grounding_encoder.cma is None and exported.config.source["sa2va_release"] == str(release.folder)
    # loaded without random init: every tensor must equal the normally built model's, or it was never loaded
    ours, reference = exported.model.state_dict(), baseline.state_dict()
    assert set(ours) == set(reference)
    assert [k for k in ours if not torch.equal(ours[k], reference[k])] == []


@forced_answer(ANSWER)
@torch.no_grad()
def test_predict_equals_sa2va_computed_from_the_source_weights(release, exported, image):
    out = exported.predict(image=image, text="the red circle")
    assert out["text"].startswith("Sure, [SEG]") and out["masks"].shape == (1, 96, 128) and out["masks"].dtype == torch.bool

    item = exported.reader.image_item(image, ["the red circle"])
    data = exported._batch(expand_eval_sample(item))
    # SAM-2's input as Sa2VA's HF predict_forward makes it: DirectResize (PIL's default resample),
    # then preprocess_image with the statistics as bfloat16 tensors, in float32
    resized = torch.from_numpy(np.array(Image.fromarray(image).resize((SAM_SIZE, SAM_SIZE)))).permute(2, 0, 1)
    sa2va_pixels = resized.to(torch.float32) / 255.0
    sa2va_pixels -= torch.tensor((0.485, 0.456, 0.406), dtype=torch.bfloat16)[:, None, None]
    sa2va_pixels /= torch.tensor((0.229, 0.224, 0.225), dtype=torch.bfloat16)[:, None, None]
    assert torch.equal(data["g_pixel_values"][0][0], sa2va_pixels)
    logits = exported.model.predict(data, 8)[0]["mask_logits"]  # (1, 1, 32, 32)
    # the same prompt + answer through the source InternVL, the [SEG] state by hand, Meta's decoder
    answer = release.tok(ANSWER, add_special_tokens=False, return_tensors="pt").input_ids[0]
    full = torch.cat([data["input_ids"][0][data["attention_mask"][0].bool()], answer])[None]
    hidden = release.native.model(input_ids=full, pixel_values=data["pixel_values"]).last_hidden_state[0]
    seg_state = hidden[(full[0] == release.tok.convert_tokens_to_ids("[SEG]")).nonzero().flatten()]  # (1, 64)
    seg = release.fcs(seg_state)
    expected = meta_language_decode(release.meta, data["g_pixel_values"][0], seg)
    torch.testing.assert_close(logits[:, 0], expected[:, 0], atol=1e-4, rtol=1e-4)
    assert torch.equal(out["masks"], (F.interpolate(logits, size=(96, 128), mode="bilinear") > 0)[:, 0])


# ------------------------------------------------------------------ SALMA training from the release
@forced_answer(ANSWER)
def test_salma_starts_from_the_release_with_fresh_cma_and_predicts_as_it(release, baseline):
    salma = build(salma_cfg(release.folder))
    cma = salma.grounding_encoder.cma
    assert cma is not None and float(cma.gamma_attn.detach()) == 0.0 and salma.grounding_encoder.mask_source == "pred"
    # everything but CMA and LoRA is the release's: LoRA-wrapped layers keep their weight under base_layer
    shared = {k: v for k, v in salma.state_dict().items() if "lora_" not in k and not k.startswith("grounding_encoder.cma.")}
    base = {k.replace(".base_layer.", "."): v for k, v in shared.items()}
    reference = baseline.state_dict()
    assert set(base) == set(reference)
    assert [k for k in base if not torch.equal(base[k], reference[k])] == []
    assert all(not p.detach().any() for n, p in salma.named_parameters() if "lora_B" in n)

    batch = make_batch(salma, [(1, 1)], tile_size=TILE, sam_size=SAM_SIZE, with_answer=False)
    with torch.no_grad():
        start, sa2va = salma.predict(batch, 8)[0], baseline.predict(batch, 8)[0]
    assert start["mask_logits"].shape == (1, 1, 32, 32)
    torch.testing.assert_close(start["mask_logits"], sa2va["mask_logits"], rtol=0, atol=0)

    salma.train()
    losses = salma(make_batch(salma, [(2, 1)], tile_size=TILE, sam_size=SAM_SIZE), mode="loss")
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert cma.gamma_attn.grad is not None and salma.text_hidden_fcs[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ refused, by name
def copy_release(release, tmp_path, edit=None) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(release.folder, folder)
    if edit is not None:
        _rewrite(folder, edit)
    return folder


@pytest.mark.parametrize("key", ["grounding_encoder.cma.gamma_attn", "text_hidden_fcs.4.weight", "lm_head.weight"],
                         ids=["salma_cma_weight", "extra_fcs_layer", "unknown_prefix"])
def test_unknown_extra_key_is_refused_by_name(release, tmp_path, key):
    folder = copy_release(release, tmp_path, lambda sd: sd.__setitem__(key, torch.zeros(2)))
    with pytest.raises(CheckpointMismatchError, match=key.replace(".", r"\.")) as err:
        build(baseline_cfg(folder))
    assert key in err.value.unexpected


@pytest.mark.parametrize("key,reported", [
    ("text_hidden_fcs.2.bias", "text_hidden_fcs.2.bias"),
    ("grounding_encoder.sam2_model.sam_mask_decoder.conv_s0.weight", "mask_decoder.conv_s0.weight"),
    ("language_model.model.norm.weight", "model.language_model.norm.weight"),
], ids=["text_hidden_fcs", "sam2", "llm"])
def test_missing_key_is_refused_by_name(release, tmp_path, key, reported):
    folder = copy_release(release, tmp_path, lambda sd: sd.pop(key))
    with pytest.raises(CheckpointMismatchError, match=reported.replace(".", r"\.")) as err:
        build(baseline_cfg(folder))
    assert err.value.missing == [reported] and str(folder) in str(err.value)


def test_seg_id_of_another_tokenizer_is_refused(release):
    """A tokenizer built elsewhere (here: without InternVL's six extra tokens) puts [SEG] on another
    embedding row than the release trained: refused, naming the token and both ids."""
    cfg = baseline_cfg(release.folder)
    cfg["mllm"]["tokenizer"] = dict(type="build_tiny_tokenizer")
    ours = release.internvl_vocab - len(INTERNVL_TOKENS)
    with pytest.raises(ValueError, match=rf"'\[SEG\]' is id {ours} in the model's tokenizer but {release.internvl_vocab}"):
        build(cfg)


def test_tokenizer_files_that_disagree_on_seg_are_refused(release, tmp_path):
    folder = copy_release(release, tmp_path)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    seg = str(release.internvl_vocab)
    config["added_tokens_decoder"][str(release.internvl_vocab + 9)] = config["added_tokens_decoder"].pop(seg)
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"disagree on the id of '\[SEG\]'"):
        build(baseline_cfg(folder))


def test_lora_wrapped_or_foreign_configs_are_refused(release, tmp_path):
    config = json.loads((release.folder / "config.json").read_text())
    with pytest.raises(ValueError, match="use_llm_lora=128"):
        sa2va_internvl_config({**config, "use_llm_lora": 128})
    internvl = tmp_path / "internvl"
    shutil.copytree(release.folder, internvl)
    (internvl / "config.json").write_text(json.dumps(sa2va_internvl_config(config)))
    with pytest.raises(ValueError, match="not a Sa2VA release folder"):
        build(baseline_cfg(internvl))


def test_sa2va_1b_config_gives_internvl2_5_1b_with_sa2vas_vocabulary():
    from test_convert_internvl import INTERNVL2_5_1B

    sa2va_1b = json.loads(json.dumps(INTERNVL2_5_1B))
    sa2va_1b.update(architectures=["Sa2VAChatModel"], model_type="sa2va_chat", template="qwen_chat", pad2square=False,
                    auto_map={"AutoModel": "modeling_sa2va_chat.Sa2VAChatModel"}, hidden_size=896)
    sa2va_1b["llm_config"]["vocab_size"] = 151679  # 151674 + [SEG] <p> </p> <vp> </vp>
    config = internvl_config_from_original(sa2va_internvl_config(sa2va_1b), image_token_id=151667)
    assert config.text_config.vocab_size == 151679 and config.image_seq_length == 256
    assert config.tie_word_embeddings is False and config.template == "qwen_chat"


# ------------------------------------------------------------------ tools/test.py scores the release
TEST_CONFIG = """
_base_ = [{base!r}]
_tile = dict(image_size={tile}, image_seq_length={tokens}, max_dynamic_patch=1)
model = dict(
    mllm=dict(tokenizer=dict(_delete_=True, type="load_pretrained_tokenizer", path={folder!r})),
    grounding_encoder=dict(enable_cma=False, mask_source="none", sam2=dict(_delete_=True, config={sam2!r})),
)
test_datasets = dict(refcoco_synth=dict(dataset=_tile), mevis_synth=dict(dataset=_tile))
"""


@forced_answer(ANSWER)
@pytest.mark.slow
def test_tools_test_scores_the_release_folder(release, synthetic_data, tmp_path, monkeypatch):
    monkeypatch.setenv("SALMA_SYNTH_ROOT", synthetic_data["out"])
    config = tmp_path / "sa2va_tiny_eval.py"
    config.write_text(TEST_CONFIG.format(base=str(ROOT / "configs/tiny/salma_tiny_synthetic.py"), tile=TILE,
                                         tokens=TILE_TOKENS, folder=str(release.folder), sam2=TINY_SAM2))
    spec = importlib.util.spec_from_file_location("salma_test_tool", ROOT / "tools" / "test.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    work_dir = tmp_path / "work"
    entries = tool.main([str(config), "--checkpoint", "none", "--work-dir", str(work_dir), "--max-items", "2",
                         "--cfg-options", f"model.pretrained={release.folder}"])
    assert set(entries) == {"refcoco_synth/val", "mevis_synth/valid_u"}
    assert entries["refcoco_synth/val"]["computed"] == 2 and entries["mevis_synth/valid_u"]["computed"] == 2
    assert 0.0 <= entries["refcoco_synth/val"]["metrics"]["cIoU"] <= 100.0
    assert os.path.isfile(work_dir / "summary.json")
