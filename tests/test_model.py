"""The tiny SALMA model: what trains, what is frozen, the prior pass, losses and prediction."""
import copy
import math

import pytest
import torch
from mmengine.config import Config

from projects.salma.registry import MODELS
from projects.salma.testing import assert_nontrivial_masks, forced_answer, make_batch

TINY = "configs/tiny/salma_tiny.py"
SIZES = dict(tile_size=128, sam_size=128)


def build(**overrides):
    cfg = Config.fromfile(TINY)
    model_cfg = copy.deepcopy(cfg.model)
    for key, value in overrides.items():
        target = model_cfg
        *path, last = key.split(".")
        for p in path:
            target = target[p]
        target[last] = value
    torch.manual_seed(0)
    return MODELS.build(model_cfg)


@pytest.fixture(scope="module")
def model():
    return build()


def frozen_and_trainable(model):
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return trainable, {n for n, p in model.named_parameters() if not p.requires_grad}


def test_frozen_and_trainable_parts(model):
    trainable, frozen = frozen_and_trainable(model)
    assert not any(n.startswith("mllm.model.model.vision_tower") for n in trainable)
    assert not any(n.startswith("mllm.model.model.multi_modal_projector") for n in trainable)
    assert not any(n.startswith("grounding_encoder.sam2.vision_encoder") for n in trainable)
    llm_trainable = {n for n in trainable if ".language_model." in n}
    assert llm_trainable and all("lora_" in n or "embed_tokens" in n for n in llm_trainable)
    assert any(".base_layer." in n for n in frozen)  # the LLM's own weights under LoRA
    for prefix in ("grounding_encoder.cma.", "grounding_encoder.sam2.mask_decoder.transformer", "text_hidden_fcs.",
                   "mllm.model.lm_head"):
        assert any(n.startswith(prefix) for n in trainable), prefix


def test_training_step_gradients_flow_exactly_where_they_should(model):
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)  # let gradient reach CMA's inside
    model.train()
    losses = model(make_batch(model, [(2, 1), (1, 3)], **SIZES), mode="loss")
    assert set(losses) == {"loss_llm", "loss_mask", "loss_dice", "loss_tmc", "loss_boundary"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    trainable, frozen = frozen_and_trainable(model)
    params = dict(model.named_parameters())
    assert [n for n in trainable if params[n].grad is None] == []
    assert [n for n in frozen if params[n].grad is not None] == []
    cma_without_signal = [n for n, p in model.grounding_encoder.cma.named_parameters() if p.grad.abs().sum() == 0]
    assert cma_without_signal == []
    # a trainable decoder weight that no loss reaches would only shrink under weight decay; the
    # hypernetworks of tokens 1-3 are reached by the objects whose best-IoU mask is theirs (which
    # token wins changes from step to step: test_frozen_decoder_heads_are_exactly_...)
    hypernetworks = "grounding_encoder.sam2.mask_decoder.output_hypernetworks_mlps."
    decoder_without_signal = [n for n in trainable if n.startswith("grounding_encoder.sam2.mask_decoder.")
                              and not n.startswith(hypernetworks) and params[n].grad.abs().sum() == 0]
    assert decoder_without_signal == []
    assert any(params[n].grad.abs().sum() > 0 for n in trainable if n.startswith(hypernetworks))


@pytest.mark.parametrize("mask_token,winners", [("best_iou", [1, 2, 3]), ("first", [None])])
def test_frozen_decoder_heads_are_exactly_those_the_rule_gives_no_gradient(mask_token, winners):
    """With the whole decoder trainable, training steps reach exactly the heads the rule trains:
    'best_iou' the hypernetwork of whichever of tokens 1-3 wins by predicted IoU (each made the
    winner in turn through the IoU head's bias), 'first' token 0's; never the IoU or object-score
    heads (the IoU only ranks). What no step reaches is what the runner freezes."""
    from projects.salma.models.grounding import UNTRAINED_DECODER_HEADS

    reached = set()
    for winner in winners:
        model = build(**{"grounding_encoder.mask_token": mask_token})
        decoder = model.grounding_encoder.sam2.mask_decoder
        frozen_by_rule = {n for n, p in decoder.named_parameters() if not p.requires_grad}
        assert frozen_by_rule == {n for n, _ in decoder.named_parameters()
                                  if n.startswith(UNTRAINED_DECODER_HEADS[mask_token])}
        if winner is not None:
            with torch.no_grad():
                bias = decoder.iou_prediction_head.proj_out.bias
                bias.fill_(-50.0)
                bias[winner] = 50.0
        decoder.requires_grad_(True)
        model.train()
        torch.manual_seed(0)
        sum(model(make_batch(model, [(2, 1), (1, 1)], **SIZES), mode="loss").values()).backward()
        step = {n for n, p in decoder.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        tokens = {int(n.split(".")[1]) for n in step if n.startswith("output_hypernetworks_mlps.")}
        assert tokens == ({0} if winner is None else {winner})
        reached |= step
    assert {n for n, _ in decoder.named_parameters()} - reached == frozen_by_rule


def test_one_optimizer_step_lowers_nothing_silently_and_moves_parameters(model):
    model = copy.deepcopy(model)
    model.train()
    batch = make_batch(model, [(2, 1), (1, 2)], **SIZES)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = sum(model(batch, mode="loss").values())
    loss.backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable, frozen = frozen_and_trainable(model)
    assert moved and moved <= trainable
    assert "text_hidden_fcs.0.weight" in moved and "grounding_encoder.sam2.mask_decoder.mask_tokens.weight" in moved
    assert torch.isfinite(loss)


@pytest.mark.parametrize("samples", [[(1, 2)], [(3, 2)], [(2, 2), (1, 2)]])
def test_prior_runs_once_per_frame_without_gradient(model, samples):
    runner = model.grounding_encoder
    calls = []
    original = runner.structure_prior

    def spy(features):
        out = original(features)
        calls.append((features.image_embeddings.shape[0], out.requires_grad))
        return out

    runner.structure_prior = spy
    try:
        model(make_batch(model, samples, **SIZES), mode="loss")
    finally:
        del runner.structure_prior
    assert calls == [(sum(t for _, t in samples), False)]


def test_batch_without_masks_still_touches_every_grounding_module(model):
    model = copy.deepcopy(model)
    losses = model(make_batch(model, [(0, 1)], **SIZES), mode="loss")
    assert set(losses) == {"loss_llm", "loss_mask"} and losses["loss_mask"].item() == 0.0
    sum(losses.values()).backward()
    trainable, _ = frozen_and_trainable(model)
    params = dict(model.named_parameters())
    assert [n for n in trainable if params[n].grad is None] == []


@pytest.mark.parametrize("overrides", [
    {"grounding_encoder.mask_source": "gt"},
    {"grounding_encoder.mask_source": "none", "grounding_encoder.cma.enable_mask_bias": False},
    {"grounding_encoder.enable_cma": False, "grounding_encoder.mask_source": "none", "loss_tmc_weight": 0.0,
     "loss_boundary_weight": 0.0},
    {"grounding_encoder.cma.mask_bias_mode": "bias"},
])
def test_variants_train(overrides):
    model = build(**overrides)
    losses = model(make_batch(model, [(2, 2)], **SIZES), mode="loss")
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    if "loss_tmc_weight" in overrides:
        assert "loss_tmc" not in losses and model.grounding_encoder.cma is None


def test_gt_prior_needs_masks_at_inference():
    model = build(**{"grounding_encoder.mask_source": "gt"})
    runner = model.grounding_encoder
    features = runner.encode_frames(torch.randn(1, 3, 128, 128))
    with pytest.raises(ValueError, match="oracle"):
        runner.prior_for_pairs(features, torch.zeros(1, dtype=torch.long))


def test_aux_weights_follow_the_warmup_scale(model):
    batch = make_batch(model, [(2, 1)], **SIZES)
    torch.manual_seed(1)
    full = model(batch, mode="loss")
    model.set_aux_loss_warmup_scale(0.25)
    torch.manual_seed(1)
    quarter = model(batch, mode="loss")
    model.set_aux_loss_warmup_scale(1.0)
    for key in ("loss_tmc", "loss_boundary"):
        assert torch.allclose(quarter[key], full[key] * 0.25, rtol=1e-4)
    assert torch.allclose(quarter["loss_llm"], full["loss_llm"])


def test_seg_count_mismatch_is_a_clear_error(model):
    batch = make_batch(model, [(2, 1)], **SIZES)
    batch["masks"][0] = batch["masks"][0][:1]
    with pytest.raises(ValueError, match="dummy0.*2 \\[SEG\\] tokens but 1 masks"):
        model(batch, mode="loss")


def test_predict_returns_one_mask_per_generated_seg_at_original_size(model):
    model.eval()
    batch = make_batch(model, [(1, 1), (1, 3)], with_answer=False, mask_size=(40, 52), **SIZES)
    with forced_answer("Sure: [SEG], and [SEG]."):  # the random LLM would answer without [SEG]
        results = model(batch, mode="predict")
    assert len(results) == 2
    for result, frames in zip(results, (1, 3)):
        assert result["text"] == "Sure: [SEG], and [SEG]."
        assert result["masks"].dtype == torch.bool
        assert result["masks"].shape == (2, frames, 40, 52)
        assert result["mask_logits"].shape == (2, frames, 32, 32)
        assert_nontrivial_masks(result["masks"])
        # the masks are the low-res logits, resized bilinearly to the original size, above 0
        resized = torch.nn.functional.interpolate(result["mask_logits"].flatten(0, 1)[:, None], size=(40, 52),
                                                  mode="bilinear", align_corners=False)
        assert torch.equal(result["masks"], (resized > 0).view(2, frames, 40, 52))
        assert result["meta"]["orig_size"] == (40, 52)


def _row(batch, b, tiles_per_row):
    """Row ``b`` of a make_batch batch as a batch of its own."""
    start = sum(tiles_per_row[:b])
    return {**{k: batch[k][b : b + 1] for k in ("input_ids", "attention_mask", "labels", "expr_ids")},
            "pixel_values": batch["pixel_values"][start : start + tiles_per_row[b]],
            "g_pixel_values": [batch["g_pixel_values"][b]], "masks": [None], "meta": [batch["meta"][b]]}


def test_predict_encodes_rows_sharing_frames_once_with_identical_masks(model, monkeypatch):
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)  # CMA and its prior gate shape the masks
    batch = make_batch(model, [(1, 2)] * 4, with_answer=False, mask_size=(40, 52), **SIZES)
    shared = batch["g_pixel_values"][0]
    # rows 0-2: the same frames (the tensor itself, then an equal copy), row 3: other frames
    batch["g_pixel_values"] = [shared, shared, shared.clone(), batch["g_pixel_values"][3]]
    runner = model.grounding_encoder
    encoded, priors = [], []
    encode, prior = runner.encode_frames, runner.structure_prior
    monkeypatch.setattr(runner, "encode_frames", lambda frames: encoded.append(frames.shape[0]) or encode(frames))
    monkeypatch.setattr(runner, "structure_prior", lambda features: priors.append(1) or prior(features))
    with forced_answer("Sure, [SEG]."):
        cached = model.predict(batch)
        assert encoded == [2, 2] and len(priors) == 2  # rows 0-2 once, row 3 once

        encoded.clear()
        alone = [model.predict(_row(batch, b, [2] * 4))[0] for b in range(4)]
    assert encoded == [2] * 4
    for c, a in zip(cached, alone):
        assert c["masks"].shape == (1, 2, 40, 52)
        assert_nontrivial_masks(c["masks"])
        assert torch.equal(c["masks"], a["masks"]) and torch.equal(c["mask_logits"], a["mask_logits"])
    assert not torch.equal(cached[0]["mask_logits"], cached[3]["mask_logits"])


@forced_answer("Sure, [SEG].")
def test_bf16_llm_with_fp32_grounding_predicts_and_trains_without_autocast():
    """SALMA-1B's mix: InternVL in bf16, SAM-2 / CMA / text_hidden_fcs in fp32 (tools/test.py runs
    no autocast), so the [SEG] states are cast to the grounding side's dtype."""
    model = build(**{"mllm.torch_dtype": "bfloat16"})
    assert model.mllm.model.dtype == torch.bfloat16 and model.text_hidden_fcs[0].weight.dtype == torch.float32
    model.eval()
    (result,) = model(make_batch(model, [(1, 2)], with_answer=False, **SIZES), mode="predict")
    assert result["masks"].shape[:2] == (1, 2) and result["mask_logits"].dtype == torch.float32
    model.train()
    losses = model(make_batch(model, [(2, 1)], **SIZES), mode="loss")
    sum(losses.values()).backward()
    assert model.text_hidden_fcs[0].weight.grad is not None


@pytest.mark.parametrize("overrides,keys", [
    ({"grounding_encoder.mask_source": "none"}, ("cma.enable_mask_bias=True", "mask_source='none'")),
    ({"grounding_encoder.cma.enable_mask_bias": False}, ("mask_source='pred'", "cma.enable_mask_bias=False")),
    ({"grounding_encoder.cma.enable_mask_bias": False, "grounding_encoder.mask_source": "gt"},
     ("mask_source='gt'", "cma.enable_mask_bias=False")),
    ({"grounding_encoder.enable_cma": False}, ("mask_source='pred'", "enable_cma=False")),
])
def test_contradictory_prior_settings_are_refused_naming_both_keys(overrides, keys):
    """A mask bias without a prior trains without MBA; a prior nothing reads costs a decoder pass per frame."""
    with pytest.raises(ValueError) as error:
        build(**overrides)
    for key in keys:
        assert key in str(error.value)


def test_tmc_negatives_follow_object_identity_across_the_batch(model, monkeypatch):
    """Expressions of one object (RefCOCO refs sharing an ann_id; MeViS expressions with the same
    anno_ids, in any order) and its frames are never each other's negatives; equal ids of another
    image are another object; objects without ids (GCG phrases) are distinct."""
    import torch.nn.functional as F

    from projects.salma.models import llava_sam2

    batch = make_batch(model, [(3, 1), (2, 2), (2, 1), (1, 1)], **SIZES)
    for b, k in ((0, 1), (1, 1)):
        batch["masks"][b][k] = batch["masks"][b][0]  # the same object: the same GT mask
    batch["meta"][0].update(dataset="refcoco", sample_id=5, ann_ids=[7, 7, 9])
    batch["meta"][1].update(dataset="mevis", sample_id="v1", anno_ids=[[3, 4], [4, 3]])
    batch["meta"][2].update(dataset="grandf", sample_id="x.jpg")
    batch["meta"][3].update(dataset="refcoco", sample_id=6, ann_ids=[7])
    # pairs in decode order: (row, object, frame)
    pairs = [(0, 0, 0), (0, 1, 0), (0, 2, 0), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1), (2, 0, 0), (2, 1, 0),
             (3, 0, 0)]
    identity = ["ann7@5", "ann7@5", "ann9@5", "v1:3+4", "v1:3+4", "v1:3+4", "v1:3+4", "x0", "x1", "ann7@6"]

    seen = {}
    tmc = llava_sam2.tmc_loss
    spy = lambda v, t, temp, groups: seen.update(v=v, t=t, temp=temp) or tmc(v, t, temp, groups)  # noqa: E731
    monkeypatch.setattr(llava_sam2, "tmc_loss", spy)
    losses = model(batch, mode="loss")
    v, t, temp = F.normalize(seen["v"].float(), dim=-1), F.normalize(seen["t"].float(), dim=-1), seen["temp"]
    assert v.shape[0] == len(pairs) == len(identity)
    n = len(pairs)
    rows, cols = [], []
    for i in range(n):
        allowed = [j for j in range(n) if j == i or identity[j] != identity[i]]
        def logit(a, b):
            return float(v[a] @ t[b]) / temp

        rows.append(-logit(i, i) + math.log(sum(math.exp(logit(i, j)) for j in allowed)))
        cols.append(-logit(i, i) + math.log(sum(math.exp(logit(j, i)) for j in allowed)))
    expected = 0.5 * (sum(rows) / n + sum(cols) / n) * model.loss_tmc_weight
    assert losses["loss_tmc"].item() == pytest.approx(expected, rel=1e-4)


def test_language_decode_is_the_same_computation_in_train_and_eval(model):
    """transformers' SAM-2 decoder, in eval mode with multimask_output=False, swaps in the best of
    mask tokens 1-3 where token 0's mask is unstable; the language decode must always be token 0."""
    runner = copy.deepcopy(model.grounding_encoder)
    with torch.no_grad():
        runner.cma.gamma_attn.fill_(0.5)
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 3, 128, 128, generator=g)
    seg = torch.randn(6, runner.hidden_dim, generator=g)
    frame_index = torch.tensor([0, 1, 0, 1, 0, 1])
    out = {}
    for mode in ("train", "eval"):
        runner.train(mode == "train")
        with torch.no_grad():
            features = runner.encode_frames(frames)
            prior = runner.prior_for_pairs(features, frame_index)
            out[mode] = runner.decode(features, frame_index, seg, prior=prior)
    assert out["train"].shape == (6, 1, 32, 32)
    assert torch.equal(out["train"], out["eval"])
    # the prior pass stays SAM-2's multimask best-of-3 (not affected by the language decode's choice)
    assert runner.sam2.mask_decoder.dynamic_multimask_via_stability


@forced_answer("Sure, [SEG].")
def test_predict_decodes_as_training_does():
    """model.predict in eval mode (how it is evaluated) gives the logits of a train-mode decode."""
    model = build(**{"mllm.llm_lora.lora_dropout": 0.0})  # no dropout anywhere: train and eval may match
    with torch.no_grad():
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)
    batch = make_batch(model, [(1, 2), (1, 1)], with_answer=False, mask_size=(40, 52), **SIZES)
    evaluated = model.eval().predict(batch)
    trained = model.train().predict(batch)
    for e, t in zip(evaluated, trained):
        assert e["masks"].shape[0] == 1 and e["masks"].any()
        assert torch.equal(e["mask_logits"], t["mask_logits"])


def test_batch_without_masks_with_bf16_llm_and_fp32_grounding_trains_without_autocast():
    """SALMA-1B's dtype mix on a chat-only batch: the idle grounding pass runs in the grounding dtype."""
    model = build(**{"mllm.torch_dtype": "bfloat16"})
    assert model.text_hidden_fcs[0].weight.dtype == torch.float32
    losses = model(make_batch(model, [(0, 1), (0, 2)], **SIZES), mode="loss")
    assert set(losses) == {"loss_llm", "loss_mask"} and losses["loss_mask"].item() == 0.0
    sum(losses.values()).backward()
    trainable, _ = frozen_and_trainable(model)
    params = dict(model.named_parameters())
    assert [n for n in trainable if params[n].grad is None] == []


def test_unfrozen_llm_with_lora_is_refused_and_without_lora_trains_everything():
    """freeze_llm=False means the LLM trains; peft's LoRA would silently re-freeze it (and the [SEG] row)."""
    with pytest.raises(ValueError) as error:
        build(**{"mllm.freeze_llm": False})  # the tiny config has llm_lora
    assert "freeze_llm=False" in str(error.value) and "llm_lora" in str(error.value)
    model = build(**{"mllm.freeze_llm": False, "mllm.llm_lora": None})
    llm = dict(model.mllm.language_model.named_parameters())
    assert llm and [n for n, p in llm.items() if not p.requires_grad] == []
    assert model.mllm.model.get_input_embeddings().weight.requires_grad and model.mllm.model.lm_head.weight.requires_grad
    assert not any(p.requires_grad for p in model.mllm.model.model.vision_tower.parameters())


def test_bf16_llm_amp_step_at_the_real_lr_moves_every_trainable_tensor(monkeypatch):
    """SALMA-1B's default launch: InternVL built in bf16, mmengine's AmpOptimWrapper (bf16 autocast,
    AdamW 4e-5, clip 1.0). Trainable tensors are fp32 master weights, so one AdamW step, about
    lr * sign(grad), lands on every element that has a gradient (in bf16 a step of 4e-5 on a
    weight of ~0.02 rounds to nothing). Frozen LLM weights stay bf16."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.optim.optimizer import amp_optimizer_wrapper

    monkeypatch.setattr(amp_optimizer_wrapper, "is_cuda_available", lambda: True)  # its CUDA-only assert
    model = build(**{"mllm.torch_dtype": "bfloat16"})
    with torch.no_grad():  # mid-training: LoRA B non-zero (else A has no gradient yet), CMA gain on
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert {n: p.dtype for n, p in trainable.items() if p.dtype != torch.float32} == {}
    assert model.mllm.language_model.layers[0].mlp.up_proj.base_layer.weight.dtype == torch.bfloat16

    cfg = Config.fromfile("configs/SALMA-1B.py").optim_wrapper.to_dict()
    assert cfg["type"] == "AmpOptimWrapper" and cfg["dtype"] == "bfloat16"
    wrapper = build_optim_wrapper(model, {**cfg, "accumulative_counts": 1})
    lr, weight_decay = cfg["optimizer"]["lr"], cfg["optimizer"]["weight_decay"]
    model.train()
    before = {n: p.detach().clone() for n, p in trainable.items()}
    with wrapper.optim_context(model):
        loss = sum(model(make_batch(model, [(2, 1), (1, 2), (0, 1)], **SIZES), mode="loss").values())
    wrapper.backward(loss)
    grads = {n: p.grad.detach().double() for n, p in trainable.items()}
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()]))
    clip = min(1.0, cfg["clip_grad"]["max_norm"] / (float(norm) + 1e-6))
    wrapper.step()

    lost, checked = {}, 0
    for name, param in trainable.items():
        grad = grads[name] * clip
        active = grad.abs() > 1e-5  # Adam's first step: lr * g / (|g| + 1e-8) ~ lr * sign(g)
        if not active.any():
            continue
        checked += 1
        w0 = before[name].double()
        expected = w0 * (1 - lr * weight_decay) - lr * grad / (grad.abs() + 1e-8)
        wrong = ((param.detach().double() - expected).abs() > 0.05 * lr) & active
        if wrong.any():
            lost[name] = f"{int(wrong.sum())}/{int(active.sum())}"
    llm_side = [n for n in trainable if n.startswith("mllm.")]
    assert llm_side and all(grads[n].abs().max() * clip > 1e-5 for n in llm_side)  # all of them checked
    assert checked > len(llm_side) and lost == {}, f"elements without their AdamW update: {lost}"


def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("training", [False, True])
def test_prior_pass_shares_the_decoders_high_res_convs_with_identical_results(training):
    """conv_s0 / conv_s1 run once per forward (the prior pass and the language decode read the same
    tensors), and the loss, the logits and every gradient equal the old computation, in which
    each of the two passes ran the convs itself."""
    model = build()
    model.train(training)
    runner = model.grounding_encoder
    decoder = runner.sam2.mask_decoder
    batch = model.data_preprocessor(dict(data=make_batch(model, [(2, 2)], **SIZES)), training=False)["data"]
    s0_calls, h0 = _count_calls(decoder.conv_s0)
    s1_calls, h1 = _count_calls(decoder.conv_s1)
    torch.manual_seed(1)
    losses = model(batch, mode="loss")
    h0.remove(), h1.remove()
    assert (len(s0_calls), len(s1_calls)) == (1, 1)
    total = sum(losses.values())
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    def old_high_res(features):  # what each pass computed before: its own convs
        return [decoder.conv_s0(features.high_res[0]), decoder.conv_s1(features.high_res[1])]

    def old_structure_prior(features):
        with torch.no_grad():
            masks, iou = runner._run_decoder(features.image_embeddings, old_high_res(features), None,
                                             multimask_output=True)
        return masks[torch.arange(masks.shape[0]), iou.argmax(dim=1)].unsqueeze(1)

    def old_decode(features, frame_index, seg, tokens=None, padding=None, prior=None):
        embeddings = runner.cma(features.image_embeddings[frame_index], tokens, prior, padding)
        high_res = [level[frame_index] for level in old_high_res(features)]
        return runner.decode_masks(embeddings, high_res, seg[:, None])

    model.zero_grad()
    runner.structure_prior, runner.decode = old_structure_prior, old_decode
    try:
        torch.manual_seed(1)
        old_losses = model(batch, mode="loss")
    finally:
        del runner.structure_prior, runner.decode
    assert old_losses.keys() == losses.keys()
    assert all(torch.equal(old_losses[k], losses[k]) for k in losses), (old_losses, losses)
    sum(old_losses.values()).backward()
    old_grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert old_grads.keys() == grads.keys() and "grounding_encoder.sam2.mask_decoder.conv_s0.weight" in grads
    assert all(torch.equal(old_grads[n], grads[n]) for n in grads)


def test_sincos_position_table_matches_hand_computed_values():
    from projects.salma.models.positions import sincos_position_table

    s, c = math.sin(1.0), math.cos(1.0)
    # grid 2, width 4: one frequency (1); per cell [sin row, cos row, sin col, cos col], raster order
    expected = torch.tensor([[0, 1, 0, 1], [0, 1, s, c], [s, c, 0, 1], [s, c, s, c]], dtype=torch.float32)
    torch.testing.assert_close(sincos_position_table(2, 4), expected)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_table(2, 6)


def _column_probe_r2(model, n_fit: int = 40, n_test: int = 20) -> float:
    """R^2 of a least-squares probe reading each LLM image token's column from its features, on noise images."""
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(n_fit + n_test, 3, 128, 128, generator=generator)
    with torch.no_grad():
        tokens = model.mllm.model.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output
    n_img, n_tok, _ = tokens.shape  # (N, 16, D)
    grid = math.isqrt(n_tok)
    column = (torch.arange(n_tok) % grid).float().repeat(n_img, 1)  # (N, 16)
    x = torch.cat([tokens, torch.ones(n_img, n_tok, 1)], dim=2).double()
    fit = torch.linalg.lstsq(x[:n_fit].flatten(0, 1), column[:n_fit].flatten().double()[:, None]).solution
    y, y_hat = column[n_fit:].flatten().double(), (x[n_fit:].flatten(0, 1) @ fit).flatten()
    return float(1 - ((y - y_hat) ** 2).sum() / ((y - y.mean()) ** 2).sum())


@pytest.mark.parametrize("init", ["sincos", "zeros"])
def test_random_vision_tower_tokens_carry_their_position_only_with_a_position_table(init):
    """'The circle on the left' needs image tokens that know where they are. transformers initialises a
    random InternViT's position embeddings to zeros: its tokens are then a bag of patches."""
    model = build(**{"mllm.vision_position_init": init})
    table = model.mllm.model.model.vision_tower.embeddings.position_embeddings
    r2 = _column_probe_r2(model)
    if init == "sincos":
        assert table[0, 1:].abs().sum() > 0 and r2 > 0.6, r2  # 0.83
    else:
        assert table.abs().sum() == 0 and r2 < 0.3, r2  # -0.11


def test_unknown_vision_position_init_is_refused():
    with pytest.raises(ValueError, match="vision_position_init"):
        build(**{"mllm.vision_position_init": "learned"})


def _hiera_column_probe_r2(model, n_fit: int = 40, n_test: int = 20) -> float:
    """R^2 of a least-squares probe reading each cell's column from SAM-2's lowest-level features
    (the decoder's image embedding, 8x8 on the tiny model), on noise images."""
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(n_fit + n_test, 3, 128, 128, generator=generator)
    with torch.no_grad():
        features = model.grounding_encoder.encode_frames(pixels).image_embeddings  # (N, C, h, w)
    n_img, _, h, w = features.shape
    cells = features.flatten(2).transpose(1, 2)  # (N, h*w, C)
    column = (torch.arange(h * w) % w).float().repeat(n_img, 1)  # (N, h*w)
    x = torch.cat([cells, torch.ones(n_img, h * w, 1)], dim=2).double()
    fit = torch.linalg.lstsq(x[:n_fit].flatten(0, 1), column[:n_fit].flatten().double()[:, None]).solution
    y, y_hat = column[n_fit:].flatten().double(), (x[n_fit:].flatten(0, 1) @ fit).flatten()
    return float(1 - ((y - y_hat) ** 2).sum() / ((y - y.mean()) ** 2).sum())


@pytest.mark.parametrize("init", ["sincos", "zeros"])
def test_random_sam2_features_carry_their_position_only_with_a_position_table(init):
    """SAM-2's decoder needs features that know where they are to pick 'the circle on the left' of two
    identical circles. transformers initialises a random Hiera's position embedding to zeros."""
    model = build(**{"grounding_encoder.sam2.position_init": init})
    table = model.grounding_encoder.sam2.vision_encoder.backbone.pos_embed
    r2 = _hiera_column_probe_r2(model)
    print(f"Hiera column probe R^2 ({init}): {r2:.3f}")
    if init == "sincos":
        assert table.abs().sum() > 0 and r2 > 0.6, r2
    else:
        assert table.abs().sum() == 0 and r2 < 0.3, r2


def test_unknown_sam2_position_init_is_refused():
    with pytest.raises(ValueError, match="sam2.position_init"):
        build(**{"grounding_encoder.sam2.position_init": "learned"})


# ------------------------------------------------------------------ fast evaluation
@forced_answer("Sure, [SEG].")
@torch.no_grad()
def test_generation_states_equal_the_teacher_forced_states(model):
    """The [SEG] and expression states read from the generation (prefill, each step, one step more
    for the last token) equal a teacher-forced forward over prompt + answer, in float32."""
    model = model.eval()
    data = make_batch(model, [(1, 1)], with_answer=False, **SIZES)
    prompt = data["input_ids"][0][data["attention_mask"][0].bool()][None]
    tiles = model.mllm.row_vision(data, 0)["pixel_values"]
    new_tokens, hidden = model.mllm.generate(prompt, torch.ones_like(prompt), tiles, 8, return_hidden=True)
    answer = model.tokenizer.decode(new_tokens[0], skip_special_tokens=False)
    assert answer.startswith("Sure, [SEG]") and new_tokens[0, -1] == model.tokenizer.eos_token_id
    full = torch.cat([prompt[0], new_tokens[0]])[None]
    teacher_forced, _ = model.mllm(full, torch.ones_like(full), tiles)
    assert hidden.shape == teacher_forced.shape == (1, full.shape[1], model.mllm.hidden_size)
    torch.testing.assert_close(hidden, teacher_forced, atol=1e-5, rtol=0)
    seg = int((full[0] == model.mllm.seg_token_id).nonzero())  # the state of [SEG] as input, not the one predicting it
    assert (hidden[0, seg] - teacher_forced[0, seg]).abs().max() <= 1e-5
    assert (hidden[0, seg] - teacher_forced[0, seg - 1]).abs().max() > 1e-2


@forced_answer("Sure, [SEG].")
def test_an_items_prompts_share_one_vision_pass_and_one_sam2_encoding(model):
    """Six sentences of one image: InternViT and SAM-2's image encoder run once for the item (they
    ran 12 and 6 times), the masks those of six independent predictions."""
    from projects.salma.evaluation.res import RESEvaluator

    model = model.eval()
    data = make_batch(model, [(1, 1)], with_answer=False, **SIZES)
    row = {k: data[k] for k in ("input_ids", "attention_mask", "expr_ids", "pixel_values", "g_pixel_values", "meta")}
    six = {**row, "input_ids": row["input_ids"].repeat(6, 1), "attention_mask": row["attention_mask"].repeat(6, 1),
           "expr_ids": row["expr_ids"].repeat(6, 1), "pixel_values": row["pixel_values"].repeat(6, 1, 1, 1),
           "g_pixel_values": [row["g_pixel_values"][0].clone() for _ in range(6)], "meta": row["meta"] * 6}
    vision, h_vision = _count_calls(model.mllm.model.model.vision_tower)
    sam2, h_sam2 = _count_calls(model.grounding_encoder.sam2.vision_encoder)
    try:
        shared = model.predict(six, 8)
        counts_shared = (len(vision), len(sam2))
        vision.clear(), sam2.clear()
        alone = [model.predict({**row, "g_pixel_values": [g]}, 8)[0] for g in six["g_pixel_values"]]
        counts_alone = (len(vision), len(sam2))
    finally:
        h_vision.remove(), h_sam2.remove()
    assert counts_shared == (1, 1) and counts_alone == (6, 6)
    for s, a in zip(shared, alone):
        assert s["masks"].any() and torch.equal(s["masks"], a["masks"]) and s["text"] == a["text"]
    assert RESEvaluator().share_item  # the evaluation's default
