"""InternVL family beside InternVL2.5: the tiny SALMA with an InternVL3.5-style LLM (a tiny Qwen3,
``configs/tiny/salma_tiny_internvl35.py``) trains, decodes alike in train() and eval(), predicts
masks through the real path and exports bit-identically. InternVL3 (Qwen2.5) is the Qwen2 path of
the tiny config itself (tests/test_model.py); both original layouts: tests/test_convert_internvl.py."""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from safetensors.torch import load_file

from projects.salma.registry import MODELS
from projects.salma.salma_model import SALMAModel
from projects.salma.testing import assert_nontrivial_masks, forced_answer, make_batch
from test_export import LLM_FRAMES, export_data_cfgs, exported, load_tool, loaded, trained  # noqa: F401
from test_export import tracker_shares_the_decoder
from test_model import SIZES, frozen_and_trainable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY35 = os.path.join(ROOT, "configs", "tiny", "salma_tiny_internvl35.py")
HYPERNETWORKS = "grounding_encoder.sam2.mask_decoder.output_hypernetworks_mlps."


def build(**mllm_overrides):
    cfg = Config.fromfile(TINY35)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.mllm.update(mllm_overrides)
    torch.manual_seed(0)
    return MODELS.build(model_cfg)


@pytest.fixture(scope="module")
def model():
    return build()


def test_tiny_config_is_salma_tiny_with_a_qwen3_llm(model):
    ours, base = Config.fromfile(TINY35), Config.fromfile(os.path.join(ROOT, "configs", "tiny", "salma_tiny.py"))
    assert ours.model.grounding_encoder == base.model.grounding_encoder
    assert {k: v for k, v in ours.model.items() if k != "mllm"} == {k: v for k, v in base.model.items() if k != "mllm"}
    text = model.mllm.model.config.text_config
    assert (text.model_type, text.head_dim, text.hidden_size // text.num_attention_heads) == ("qwen3", 48, 32)
    layer = model.mllm.language_model.layers[0].self_attn
    assert type(model.mllm.language_model).__name__ == "Qwen3Model"
    assert layer.q_norm.weight.shape == (48,) and layer.q_proj.base_layer.weight.shape == (4 * 48, 128)


def test_one_training_step_moves_every_trainable_tensor_and_only_those(model):
    """LoRA (B made non-zero, else A has no gradient yet), the embeddings and LM head, text_hidden_fcs,
    CMA (gain made non-zero) and the SAM-2 decoder move; the Qwen3 weights themselves (q/k norms
    included), InternViT, the projector and SAM-2's encoder do not. Of the decoder's hypernetworks
    only those of the tokens the best-IoU rule picked this step can move (tests/test_model.py)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)
    model.train()
    trainable, frozen = frozen_and_trainable(model)
    assert any(".self_attn.q_norm." in n for n in frozen) and any(".self_attn.k_norm." in n for n in frozen)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = model(make_batch(model, [(2, 1), (1, 3), (0, 1)], **SIZES), mode="loss")
    assert set(losses) == {"loss_llm", "loss_mask", "loss_dice", "loss_tmc", "loss_boundary"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved <= trainable, sorted(moved - trainable)
    still = trainable - moved
    assert {n for n in still if not n.startswith(HYPERNETWORKS)} == set(), sorted(still)
    assert any(n.startswith(HYPERNETWORKS) for n in moved)
    for prefix in ("mllm.model.model.language_model.embed_tokens.", "mllm.model.lm_head.", "text_hidden_fcs.",
                   "grounding_encoder.cma."):
        assert any(n.startswith(prefix) for n in moved), prefix
    assert any("lora_A" in n for n in moved) and any("lora_B" in n for n in moved)


@forced_answer("Sure, [SEG].")
def test_train_and_eval_decode_the_same_masks():
    model = build(llm_lora=dict(r=8, lora_alpha=16, lora_dropout=0.0))  # no dropout: train and eval may match
    with torch.no_grad():
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)
    batch = make_batch(model, [(1, 2), (1, 1)], with_answer=False, mask_size=(40, 52), **SIZES)
    evaluated = model.eval().predict(batch)
    trained = model.train().predict(batch)
    for e, t in zip(evaluated, trained, strict=True):
        assert e["text"] == "Sure, [SEG]." and e["masks"].shape[0] == 1
        assert_nontrivial_masks(e["masks"])
        assert torch.equal(e["mask_logits"], t["mask_logits"]) and torch.equal(e["masks"], t["masks"])


# ------------------------------------------------------------------ export (the fixtures of test_export.py)
@pytest.fixture(scope="module")
def config_path(tmp_path_factory, export_data_cfgs):  # noqa: F811  (test_export's, on the Qwen3 config)
    test_datasets = {"refcoco": dict(task="res", dataset=export_data_cfgs["refcoco"]),
                     "mevis": dict(task="ref_vos", dataset=export_data_cfgs["mevis"])}
    test_options = dict(num_llm_frames=LLM_FRAMES, max_new_tokens=8)
    path = tmp_path_factory.mktemp("config") / "salma_tiny_internvl35_export.py"
    path.write_text(f"_base_ = [{TINY35!r}]\ntest_datasets = {test_datasets!r}\ntest_options = {test_options!r}\n")
    return str(path)


@pytest.mark.slow
def test_export_then_from_pretrained_is_bit_identical(exported, loaded):  # noqa: F811
    model, out = exported
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["internvl"]["text_config"]["model_type"] == "qwen3"
    assert config["internvl"]["text_config"]["head_dim"] == 48
    assert type(loaded.model.mllm.language_model).__name__ == "Qwen3Model"
    ours, theirs = model.state_to_save(), loaded.state_to_save()
    assert set(ours) == set(theirs) and any(".self_attn.q_norm." in k for k in ours)
    assert [k for k in ours if not torch.equal(ours[k], theirs[k])] == []
    assert [k for k in ours if ours[k].dtype != theirs[k].dtype] == []
    buffers = dict(loaded.named_buffers(remove_duplicate=False))
    assert all(torch.equal(b, buffers[k]) for k, b in model.named_buffers(remove_duplicate=False))
    assert not any("lora_" in n for n, _ in loaded.named_parameters())
    assert tracker_shares_the_decoder(loaded)


@pytest.mark.slow
def test_cli_export_writes_the_same_weights(exported, trained, config_path, tmp_path):  # noqa: F811
    out = tmp_path / "cli"
    load_tool("export").main([config_path, trained[1], "--out", str(out), "--sam2-memory", "random"])
    ours, theirs = load_file(os.path.join(exported[1], "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(ours) == set(theirs) and [k for k in ours if not torch.equal(ours[k], theirs[k])] == []
    reloaded = SALMAModel.from_pretrained(str(out), device="cpu")
    assert type(reloaded.model.mllm.language_model).__name__ == "Qwen3Model"


@pytest.mark.slow
def test_exported_predict_returns_masks_and_decodes_as_in_training(loaded):  # noqa: F811
    """SALMAModel.predict on an image (reader, generate, [SEG] decode): non-empty masks at the image's
    size, and the same masks with the inner model in train() mode."""
    image = np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)
    with forced_answer("Sure, [SEG]."):  # the random tiny LLM rarely emits [SEG] by itself
        evaluated = loaded.predict(image=image, text="the circle")
        loaded.model.train()
        try:
            trained_mode = loaded.predict(image=image, text="the circle")
        finally:
            loaded.model.eval()
    assert evaluated["text"] == "Sure, [SEG]." and evaluated["masks"].shape == (1, 40, 52)
    assert_nontrivial_masks(evaluated["masks"], "predict masks")
    assert torch.equal(evaluated["masks"], trained_mode["masks"])
