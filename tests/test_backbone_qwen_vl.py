"""The Qwen-VL family (Qwen2.5-VL, Qwen3-VL) behind SALMA's MLLM interface, on tiny random models.

Batches come through the real readers (synthetic RefCOCO / MeViS in their formats, read with
``vision=dict(family='qwen_vl', ...)``) and ``salma_collate``: the patch rows, grids and
``<|image_pad|>`` tokens are the ones training would see. Checked per family: a training step
moves every trainable tensor and nothing frozen; generation's hidden states equal a
teacher-forced forward; ``predict`` takes the path that produces masks; eval and train decode
alike; each row finds its own images in a batch; visual prompts are refused by name.
"""
import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from projects.salma.datasets.collate import salma_collate
from projects.salma.datasets.synthetic import make_synthetic
from projects.salma.registry import DATASETS, MODELS
from projects.salma.testing import forced_answer
from test_export import LLM_FRAMES, export_data_cfgs, exported, loaded, trained  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"qwen2.5-vl": "configs/tiny/salma_tiny_qwen_vl.py", "qwen3-vl": "configs/tiny/salma_tiny_qwen3_vl.py"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("qwen_synth"))
    make_synthetic(out, seed=0, num_images=4, num_val_images=2, num_videos=2, num_val_videos=1, num_frames=4,
                   num_llava=0, num_gcg=0, num_osprey=2, num_video_qa=0, num_sav_videos=0, num_ref_sav_videos=0,
                   num_flickr=0, num_psg=0)
    return out


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def family(request, synth):
    """(config, model, readers) of one family; the model dropout-free so train and eval can match."""
    cfg = Config.fromfile(CONFIGS[request.param])
    cfg.model.mllm.llm_lora.lora_dropout = 0.0
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    common = dict(tokenizer=cfg.tokenizer, vision=cfg.vision, sam_image_size=128, max_length=1024, system="")
    image = DATASETS.build(dict(type="RefCOCODataset", mode="train", data_root=f"{synth}/refcoco_synth",
                                image_folder=f"{synth}/refcoco_synth/images", split="train",
                                num_classes_per_sample=2, **common))
    video = DATASETS.build(dict(type="RefVOSDataset", mode="train", data_root=f"{synth}/mevis_synth/train",
                                expression_file="meta_expressions.json", image_folder="JPEGImages",
                                mask_file="mask_dict.json", num_frames=2, num_expressions_per_sample=1, **common))
    return request.param, cfg, model, (image, video), common


def batch_of(samples):
    return salma_collate(samples)["data"]


def test_a_training_step_moves_every_trainable_tensor_and_nothing_frozen(family):
    name, _, model, (image, video), _ = family
    model = copy.deepcopy(model).train()
    with torch.no_grad():
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)  # let gradient reach CMA's inside
    data = batch_of([image[0], video[0]])
    assert data["image_grid_thw"].shape[1] == 3 and data["pixel_values"].dim() == 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    losses = model(data, mode="loss")
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    optimizer.step()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in names) and any(n.startswith("mllm.model.lm_head") for n in names)
    assert not any(n.startswith("mllm.model.model.visual") for n in names)  # the vision tower is frozen
    # the mask tokens' hypernetworks learn only when their token wins (the decode rule, see
    # test_model.py::test_frozen_decoder_heads_are_exactly_those_the_rule_gives_no_gradient)
    unmoved = sorted(n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])
                     and "output_hypernetworks_mlps" not in n)
    assert not unmoved, f"{name}: trainable tensors the step did not move: {unmoved[:10]}"
    moved_frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad and not torch.equal(p, before[n]))
    assert not moved_frozen


@torch.no_grad()
def test_generation_states_equal_a_teacher_forced_forward(family):
    name, _, model, (image, _), _ = family
    model = model.eval()
    data = batch_of([image[0]])
    vision = model.mllm.row_vision(data, 0)
    prompt = prompt_batch_from(image[0])[None]
    with forced_answer("Sure, [SEG]."):
        new_tokens, hidden = model.mllm.generate(prompt, torch.ones_like(prompt), vision["pixel_values"], 8,
                                                 image_grid_thw=vision["image_grid_thw"], return_hidden=True)
    assert model.tokenizer.decode(new_tokens[0], skip_special_tokens=False).startswith("Sure, [SEG]")
    full = torch.cat([prompt[0], new_tokens[0]])[None]
    teacher_forced, _ = model.mllm(full, torch.ones_like(full), vision["pixel_values"],
                                   image_grid_thw=vision["image_grid_thw"])
    assert hidden.shape == teacher_forced.shape == (1, full.shape[1], model.mllm.hidden_size)
    torch.testing.assert_close(hidden, teacher_forced, atol=1e-5, rtol=0)


def test_predict_gives_one_mask_per_seg_and_decodes_as_training_does(family):
    name, _, model, (image, video), _ = family
    with torch.no_grad():
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)
    rows = []
    for sample in (image[1], video[1]):
        rows.append({**sample, "input_ids": prompt_batch_from(sample), "labels": None, "masks": None,
                     "expr_ids": None})
    data = prediction_batch(rows)
    with forced_answer("Sure, [SEG]."):
        evaluated = model.eval().predict(data)
        in_training = model.train().predict(data)
    for result, frames, t in zip(evaluated, (1, 2), in_training):
        assert result["text"] == "Sure, [SEG]."
        assert result["masks"].dtype == torch.bool and result["masks"].shape[:2] == (1, frames)
        assert result["masks"].any() and torch.isfinite(result["mask_logits"]).all()
        assert torch.equal(result["mask_logits"], t["mask_logits"])


def prompt_batch_from(sample):
    """Input ids of the sample's first turn up to the assistant's answer (a generation prompt)."""
    labels = sample["labels"]
    first_answer = int((labels != -100).nonzero()[0])
    return sample["input_ids"][:first_answer]


def prediction_batch(rows):
    import torch.nn.functional as F

    length = max(len(r["input_ids"]) for r in rows)
    pad = rows[0]["meta"]["pad_token_id"]
    ids = torch.stack([F.pad(r["input_ids"], (0, length - len(r["input_ids"])), value=pad) for r in rows])
    mask = torch.stack([torch.arange(length) < len(r["input_ids"]) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "expr_ids": torch.full_like(ids, -1),
            "pixel_values": torch.cat([r["pixel_values"] for r in rows]),
            "image_grid_thw": torch.cat([r["image_grid_thw"] for r in rows]),
            "g_pixel_values": [r["g_pixel_values"] for r in rows], "meta": [r["meta"] for r in rows]}


def test_each_row_finds_its_own_images_in_a_batch(family):
    _, _, model, (image, video), _ = family
    samples = [video[0], image[0], image[1]]
    data = batch_of(samples)
    for b, sample in enumerate(samples):
        row = model.mllm.row_vision(data, b)
        assert torch.equal(row["pixel_values"], sample["pixel_values"])
        assert torch.equal(row["image_grid_thw"], sample["image_grid_thw"])
    assert len(samples[0]["image_grid_thw"]) == 2  # a video: one grid row per frame


def test_visual_prompts_are_refused_by_name(family, synth):
    _, _, model, _, common = family
    with pytest.raises(ValueError, match="visual prompts .* InternVL's fixed token grid"):
        DATASETS.build(dict(type="OspreyDataset", kind="detail_description", data_root=f"{synth}/osprey_synth",
                            data_file="Osprey-724K/osprey_detail_description.json",
                            image_folder=["images/train2017", "images/val2017"], **common))
    with pytest.raises(ValueError, match="visual prompts"):
        model.mllm.generate(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3), None, 2,
                            prompt_masks=[torch.ones(1, 2, 2, dtype=torch.bool)])


def test_readers_of_another_family_are_refused_by_name(family):
    from projects.salma.build import check_vision_family, model_input_sizes

    _, _, model, _, common = family
    check_vision_family(model, {"vision": common["vision"]}, "refcoco_val")  # the config's own readers pass
    with pytest.raises(ValueError, match="refcoco_val: the reader's vision.family is 'internvl' but the model's"):
        check_vision_family(model, {}, "refcoco_val")
    assert model_input_sizes(model) == {"sam_image_size": 128}


# ------------------------------------------------------------------ export (the fixtures of test_export.py)

@pytest.fixture(scope="module", params=sorted(CONFIGS))
def config_path(request, tmp_path_factory, export_data_cfgs):  # noqa: F811  (test_export's, on a Qwen-VL config)
    """A tiny Qwen-VL config with evaluation readers of its family (what an export reads)."""
    tiny = Config.fromfile(CONFIGS[request.param])
    readers = {name: {**cfg, "tokenizer": tiny.tokenizer.to_dict(), "vision": tiny.vision.to_dict()}
               for name, cfg in export_data_cfgs.items()}
    test_datasets = {"refcoco": dict(task="res", dataset=readers["refcoco"]),
                     "mevis": dict(task="ref_vos", dataset=readers["mevis"])}
    test_options = dict(num_llm_frames=LLM_FRAMES, max_new_tokens=8)
    path = tmp_path_factory.mktemp("config") / f"{request.param}_export.py"
    base = str(ROOT / CONFIGS[request.param])
    path.write_text(f"_base_ = [{base!r}]\ntest_datasets = {test_datasets!r}\ntest_options = {test_options!r}\n")
    return str(path)


@pytest.mark.slow
def test_export_then_from_pretrained_is_bit_identical_and_predicts_alike(exported, loaded):  # noqa: F811
    import json
    import os

    import numpy as np

    model, out = exported
    config = json.load(open(os.path.join(out, "config.json")))
    assert "internvl" not in config and config["qwen_vl"]["model_type"] in ("qwen2_5_vl", "qwen3_vl")
    assert config["inputs"]["vision"]["family"] == "qwen_vl"
    assert type(loaded.model.mllm).__name__ == "QwenVLMLLM" and loaded.model.mllm.family == config["qwen_vl"]["model_type"]
    ours, theirs = model.state_to_save(), loaded.state_to_save()
    assert set(ours) == set(theirs) and not any("lora_" in k for k in theirs)
    assert [k for k in ours if not torch.equal(ours[k], theirs[k])] == []
    image = np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)
    with forced_answer("Sure, [SEG]."):
        before = model.eval().predict(image=image, text="the circle")
        after = loaded.predict(image=image, text="the circle")
    assert after["text"] == "Sure, [SEG]." and after["masks"].shape == (1, 40, 52) and after["masks"].any()
    assert torch.equal(torch.as_tensor(before["masks"]), torch.as_tensor(after["masks"]))


@pytest.mark.slow
def test_an_export_whose_sections_disagree_is_refused_with_each_key(exported):  # noqa: F811
    import json
    import os

    from projects.salma.salma_model import SALMAConfig

    data = json.load(open(os.path.join(exported[1], "config.json")))
    SALMAConfig.from_dict(data)  # as written
    bad = copy.deepcopy(data)
    bad["inputs"]["vision"]["patch_size"] = 99
    bad["inputs"]["vision"]["merge_sise"] = 2
    with pytest.raises(ValueError, match=r"unknown key 'inputs.vision.merge_sise'"):
        SALMAConfig.from_dict(bad)
    del bad["inputs"]["vision"]["merge_sise"]
    with pytest.raises(ValueError, match=r"inputs.vision.patch_size 99 != qwen_vl.vision_config.patch_size"):
        SALMAConfig.from_dict(bad)
    both = {**data, "internvl": {}}
    with pytest.raises(ValueError, match=r"exactly one of \['internvl', 'qwen_vl'\]"):
        SALMAConfig.from_dict(both)


@pytest.mark.parametrize("untie", [False, True])
def test_a_tied_lm_head_trains_apart_only_when_untied(untie):
    """Qwen2.5-VL-3B and Qwen3-VL-4B tie the LM head to the embeddings; Sa2VA's peft
    modules_to_save copies each, so they train apart (untie_embeddings=True, the shipped configs)."""
    cfg = Config.fromfile(CONFIGS["qwen2.5-vl"])
    cfg.model.mllm.config.tie_word_embeddings = True
    cfg.model.mllm.config.text_config.tie_word_embeddings = True
    cfg.model.mllm.untie_embeddings = untie
    torch.manual_seed(0)
    mllm = MODELS.build(cfg.model).mllm
    embed, head = mllm.model.get_input_embeddings().weight, mllm.model.lm_head.weight
    assert (embed is head) != untie and torch.equal(embed, head)
    assert embed.requires_grad and head.requires_grad
    assert mllm.model.config.tie_word_embeddings != untie
    ids = torch.tensor([[40, 41, 42, 43]])  # text tokens (the special ones, placeholders among them, come first)
    _, loss = mllm(ids, torch.ones_like(ids), labels=ids)
    loss.backward()
    with torch.no_grad():
        for p in {id(embed): embed, id(head): head}.values():
            p -= 0.1 * p.grad
    assert torch.equal(embed, head) != untie
