"""Every config builds (tiny ones for real; real-size ones are checked against the seed's values)."""
import glob
import os

import pytest
from mmengine.config import Config

from projects.salma.registry import MODELS

REAL_SIZE = sorted(glob.glob("configs/*.py") + glob.glob("configs/ablations/*.py"))
SHIPPED = sorted(glob.glob("configs/**/*.py", recursive=True))


@pytest.mark.parametrize("path", REAL_SIZE)
def test_real_size_configs_parse_and_name_registered_types(path):
    cfg = Config.fromfile(path)
    for key in ("model", "train_dataloader", "optim_wrapper", "param_scheduler", "train_cfg"):
        assert key in cfg, f"{path}: no {key}"
    assert MODELS.get(cfg.model.type) is not None


@pytest.mark.parametrize("path", [p for p in SHIPPED if "_base_/datasets" not in p and "scope.py" not in p
                                  and "default_runtime" not in p])
def test_shipped_configs_have_consistent_prior_settings(path):
    """The grounding runner's build-time check (mask bias <-> prior source), without building SAM-2."""
    from projects.salma.models.grounding import check_prior_settings

    grounding = Config.fromfile(path).model.grounding_encoder.to_dict()
    check_prior_settings(enable_cma=grounding.get("enable_cma", True), cma=grounding.get("cma"),
                         mask_source=grounding.get("mask_source", "pred"))


MODEL_CONFIGS = [p for p in SHIPPED if "_base_/datasets" not in p and "scope.py" not in p and "default_runtime" not in p]


@pytest.mark.parametrize("path", MODEL_CONFIGS)
def test_every_shipped_config_names_its_decode_rule(path):
    """The originals' rule (best predicted IoU of tokens 1-3) is written in every shipped model,
    not left to a class default; only the decode-rule ablations flip it, and nothing else."""
    rule = Config.fromfile(path).model.grounding_encoder.get("mask_token")
    assert rule == ("first" if os.path.basename(path) == "mask_token_first.py" else "best_iou")


@pytest.mark.parametrize("ablation,base", [("configs/ablations/mask_token_first.py", "configs/SALMA-1B.py"),
                                           ("configs/tiny/ablations/mask_token_first.py",
                                            "configs/tiny/salma_tiny_synthetic.py")])
def test_decode_rule_ablation_flips_only_the_rule(ablation, base):
    a, b = flat(Config.fromfile(base).to_dict()), flat(Config.fromfile(ablation).to_dict())
    changed = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert changed == {"model.grounding_encoder.mask_token": ("best_iou", "first")}


def test_salma_1b_matches_the_seed():
    cfg = Config.fromfile("configs/SALMA-1B.py")
    mllm, sam = cfg.model.mllm, cfg.model.grounding_encoder
    assert (mllm.freeze_llm, mllm.freeze_visual_encoder) == (True, True)
    assert (mllm.llm_lora.r, mllm.llm_lora.lora_alpha, mllm.llm_lora.lora_dropout) == (128, 256, 0.05)
    assert sam.sam2.size == "large" and sam.freeze_image_encoder and not sam.freeze_decoder
    assert (sam.enable_cma, sam.mask_source) == (True, "pred")
    assert dict(sam.cma) == dict(num_heads=8, use_multi_token=True, topk_tokens=2, use_film=False,
                                 enable_mask_bias=True, mask_bias_mode="gate", mask_bias_tau=1.0,
                                 mask_bias_strength=1.0)
    m = cfg.model
    assert (m.loss_mask_weight, m.loss_dice_weight, m.loss_tmc_weight, m.loss_boundary_weight,
            m.tmc_temperature) == (2.0, 0.5, 0.1, 0.05, 0.15)
    hooks = {h.type: h for h in cfg.custom_hooks}
    assert hooks["AuxLossWarmupHook"].warmup_ratio == 0.2 and "CMAWarmupHook" in hooks
    assert cfg.train_dataloader.batch_size == 2 and cfg.optim_wrapper.accumulative_counts == 4
    opt = cfg.optim_wrapper
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ("AdamW", 4e-5, 0.05)
    assert opt.clip_grad.max_norm == 1.0 and opt.dtype == "bfloat16"
    assert [s.type for s in cfg.param_scheduler] == ["LinearLR", "CosineAnnealingLR"]
    assert cfg.param_scheduler[0].end == 0.05 and cfg.train_cfg.max_epochs == 1


# Seed §5.2 (Sa2VA-1B's mix): (name, reader, repeats) of every dataset, in the configs' order.
OSPREY_KINDS = ("conversation", "detail_description", "short_form", "part_level", "lvis_positive_negative")
SEED_MIX = [
    ("refcoco", "RefCOCODataset", 4), ("refcoco+", "RefCOCODataset", 4), ("refcocog", "RefCOCODataset", 4),
    ("mevis", "RefVOSDataset", 4), ("revos", "RefVOSDataset", 10), ("ref_ytvos", "RefVOSDataset", 4),
    ("video_qa", "VideoQADataset", 1), ("sav", "SAVDataset", 4),
    ("psg", "GCGDataset", 1), ("grandf", "GCGDataset", 10), ("flickr", "FlickrGCGDataset", 1),
    ("refcocog_gcg", "GCGDataset", 1), ("llava", "LLaVADataset", 1),
] + [(f"osprey_{kind}", "OspreyDataset", 1) for kind in OSPREY_KINDS]


# SALMA and its Sa2VA baseline, per backbone (docs/backbones.md): the same data, decode rule and additions.
INTERNVL_PAIRS = [("configs/SALMA-1B.py", "configs/Sa2VA-1B.py"),
                  ("configs/SALMA-InternVL3-2B.py", "configs/Sa2VA-InternVL3-2B.py")]
# Qwen-VL: the same mix without the Osprey region sets (visual prompts need InternVL's token grid).
QWEN_VL_PAIRS = [("configs/SALMA-Qwen2.5-VL-3B.py", "configs/Sa2VA-Qwen2.5-VL-3B.py"),
                 ("configs/SALMA-Qwen3-VL-4B.py", "configs/Sa2VA-Qwen3-VL-4B.py")]
SALMA_PAIRS = INTERNVL_PAIRS + QWEN_VL_PAIRS
SALMA_AND_BASELINES = [p for pair in SALMA_PAIRS for p in pair]
QWEN_VL_CONFIGS = [p for pair in QWEN_VL_PAIRS for p in pair]
SEED_MIX_WITHOUT_REGIONS = [entry for entry in SEED_MIX if entry[1] != "OspreyDataset"]


@pytest.mark.parametrize("path", [p for pair in INTERNVL_PAIRS for p in pair])
def test_training_mix_is_the_seeds_whole_mix(path):
    mix = Config.fromfile(path).train_dataset
    assert [(d.name, d.type, r) for d, r in zip(mix.datasets, mix.repeats)] == SEED_MIX
    entries = {d.name: d for d in mix.datasets}
    assert [entries[f"osprey_{k}"].kind for k in OSPREY_KINDS] == list(OSPREY_KINDS)
    assert all(entries[f"osprey_{k}"].data_file.endswith(f"Osprey-724K/osprey_{k}.json") for k in OSPREY_KINDS)
    assert [os.path.basename(f) for f in entries["osprey_conversation"].image_folder] == \
        ["train2014", "val2014", "train2017", "val2017"]
    check_mix_entries(mix)


@pytest.mark.parametrize("path", QWEN_VL_CONFIGS)
def test_qwen_vl_training_mix_is_the_seeds_mix_without_the_region_sets(path):
    """Osprey's visual prompts are refused under vision.family='qwen_vl' (as Sa2VA's Qwen configs
    leave them out): the rest of the mix, entry by entry and repeat by repeat, is SALMA-1B's."""
    mix = Config.fromfile(path).train_dataset
    assert [(d.name, d.type, r) for d, r in zip(mix.datasets, mix.repeats)] == SEED_MIX_WITHOUT_REGIONS
    check_mix_entries(mix)


def check_mix_entries(mix):
    assert mix.type == "DatasetMix" and len(mix.datasets) == len(mix.repeats)
    entries = {d.name: d for d in mix.datasets}
    assert entries["psg"].data_file.endswith("OpenPsgGCG_train.json")
    assert entries["grandf"].data_file.endswith("GranDf_HA_GCG_train.json")
    assert entries["flickr"].data_file.endswith("flickr_mergedGT_GCG_train.json")
    assert entries["video_qa"].num_frames == 5 and entries["video_qa"].data_file.endswith("video_chat.json")
    assert (entries["sav"].num_frames, entries["sav"].num_objects_per_sample, entries["sav"].expression) == (5, 5, "long")
    assert all(d.tokenizer == mix.datasets[0].tokenizer and d.max_length == 8192 for d in mix.datasets)


@pytest.mark.parametrize("salma_path,base_path", SALMA_PAIRS)
def test_sa2va_baseline_turns_off_exactly_salma_additions(salma_path, base_path):
    salma, base = Config.fromfile(salma_path), Config.fromfile(base_path)
    assert base.model.grounding_encoder.enable_cma is False and base.model.grounding_encoder.mask_source == "none"
    assert base.model.loss_tmc_weight == 0 and base.model.loss_boundary_weight == 0
    assert base.model.mllm == salma.model.mllm and base.optim_wrapper == salma.optim_wrapper


def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("prev,row,expected", [
    ("configs/Sa2VA-1B.py", "1_cma_no_mba", {"grounding_encoder.enable_cma": True,
                                              "grounding_encoder.cma.enable_mask_bias": False,
                                              "grounding_encoder.cma.topk_tokens": 0}),
    ("configs/ablations/1_cma_no_mba.py", "2_mba_gate", {"grounding_encoder.mask_source": "pred",
                                                         "grounding_encoder.cma.enable_mask_bias": True}),
    ("configs/ablations/2_mba_gate.py", "3_topk_routing", {"grounding_encoder.cma.topk_tokens": 2}),
    ("configs/ablations/3_topk_routing.py", "4_tmc", {"loss_tmc_weight": 0.1}),
    ("configs/ablations/4_tmc.py", "5_boundary", {"loss_boundary_weight": 0.05}),
])
def test_each_ablation_row_flips_only_what_it_names(prev, row, expected):
    before = flat(Config.fromfile(prev).model.to_dict())
    after = flat(Config.fromfile(f"configs/ablations/{row}.py").model.to_dict())
    changed = {k: after.get(k) for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert {k: v for k, v in changed.items() if k in expected} == expected
    allowed_extra = {"grounding_encoder.mask_source", "grounding_encoder.cma.use_multi_token", "tmc_temperature",
                     "grounding_encoder.cma.mask_bias_mode"}
    assert set(changed) - set(expected) <= allowed_extra


def test_last_ablation_equals_salma():
    assert Config.fromfile("configs/ablations/5_boundary.py").model == Config.fromfile("configs/SALMA-1B.py").model


def test_salma_1b_evaluates_every_benchmark_of_the_seed_tables():
    from projects.salma.evaluation.runner import resolve_runs

    runs = {r.name: r for r in resolve_runs(Config.fromfile("configs/SALMA-1B.py"))}
    assert sorted(runs) == sorted([
        "refcoco/val", "refcoco/testA", "refcoco/testB", "refcoco_plus/val", "refcoco_plus/testA",
        "refcoco_plus/testB", "refcocog/val", "refcocog/test", "ref_davis17", "mevis/valid_u", "mevis/valid",
        "revos", "ref_ytvos", "ref_sav"])
    assert runs["refcocog/test"].dataset["split_by"] == "umd" and runs["refcoco_plus/val"].dataset["split_by"] == "unc"
    assert runs["revos"].options.protocol == "revos" and runs["revos"].dataset["foreground_file"]
    ref_sav = runs["ref_sav"]  # long / short expressions reported separately, frames from SA-V's mp4
    assert ref_sav.options.protocol == "refsav" and ref_sav.dataset["type"] == "RefSAVDataset"
    assert ref_sav.dataset["video_file"] == "{video_id:.7}/{video_id}.mp4" and ref_sav.dataset["mask_file"]
    # No public GT: masks only, written as a submission zip.
    assert runs["mevis/valid"].dataset["mask_file"] is None and runs["ref_ytvos"].dataset["mask_file"] is None
    assert runs["mevis/valid_u"].options.num_llm_frames == 5 and runs["mevis/valid_u"].options.propagation == "memory"
    assert Config.fromfile("configs/Sa2VA-1B.py").test_datasets == Config.fromfile("configs/SALMA-1B.py").test_datasets


@pytest.mark.parametrize("path", SALMA_AND_BASELINES)
def test_video_evaluation_samples_the_llm_frames_uniformly_by_default(path):
    """Sa2VA-i's uniform LLM frames are the default; 'first' (Sa2VA's protocol) is one option away."""
    from projects.salma.evaluation.runner import resolve_runs

    cfg = Config.fromfile(path)
    runs = {r.name: r for r in resolve_runs(cfg)}
    for name in ("mevis/valid_u", "ref_davis17", "revos", "ref_sav", "ref_ytvos"):
        options = runs[name].options
        assert (options.llm_frame_sampling, options.num_llm_frames) == ("uniform", 5), name
        assert (options.llm_frame_masks, options.tracker_decoder) == ("language", "shared"), name
    cfg.merge_from_dict({"test_options.llm_frame_sampling": "first"})
    assert resolve_runs(cfg, ["mevis"], "valid_u")[0].options.llm_frame_sampling == "first"


def test_tiny_synthetic_test_datasets_build_on_synthetic_data(synthetic_data, monkeypatch):
    from projects.salma.evaluation.runner import complete_dataset_cfg, resolve_runs
    from projects.salma.registry import DATASETS

    monkeypatch.setenv("SALMA_SYNTH_ROOT", synthetic_data["out"])
    cfg = Config.fromfile("configs/tiny/salma_tiny_synthetic.py")
    model = MODELS.build(cfg.model)
    sizes = {}
    for run in resolve_runs(cfg):
        dataset = DATASETS.build(complete_dataset_cfg(run, cfg.model.to_dict(), model))
        sizes[run.name] = len(dataset)
    assert sizes == {"refcoco_synth/val": 8, "mevis_synth/valid_u": 3}  # the fixture's val images / videos


def test_tiny_full_mix_reads_every_format_and_trains_one_step(synthetic_data, monkeypatch):
    """configs/tiny/salma_tiny_full_mix.py: the demo's two datasets plus every new format, on the
    synthetic data; a batch of region, video-chat, SA-V and Flickr samples trains one step."""
    import torch

    from projects.salma.datasets.collate import salma_collate
    from projects.salma.registry import DATASETS

    monkeypatch.setenv("SALMA_SYNTH_ROOT", synthetic_data["out"])
    cfg = Config.fromfile("configs/tiny/salma_tiny_full_mix.py")
    demo = Config.fromfile("configs/tiny/salma_tiny_synthetic.py")
    mix = DATASETS.build(cfg.train_dataset.to_dict())
    names = [d.name for d in mix.datasets]
    assert names[:2] == [d.name for d in demo.train_dataset.datasets] and len(names) == 13
    assert sorted(cfg.test_datasets) == ["mevis_synth", "ref_sav_synth", "refcoco_synth"]
    samples = {d.name: d[0] for d in mix.datasets}  # every reader reads its synthetic data
    assert samples["osprey_conversation_synth"]["prompt_masks"] is not None
    batch = salma_collate([samples[n] for n in ("osprey_short_form_synth", "video_qa_synth", "sav_synth",
                                                  "flickr_synth")])["data"]
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    losses = model(batch, mode="loss")
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_mask"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# Tiny ablation chain (configs/tiny/ablations): each row flips exactly what its name says.
TINY_ROWS = ["0_baseline", "1_cma_no_mba", "2_mba_gate", "3_topk_routing", "4_tmc", "5_boundary"]
TINY_FLIPS = {
    "1_cma_no_mba": {"grounding_encoder.enable_cma": (False, True)},
    "2_mba_gate": {"grounding_encoder.mask_source": ("none", "pred"),
                   "grounding_encoder.cma.enable_mask_bias": (False, True)},
    "3_topk_routing": {"grounding_encoder.cma.topk_tokens": (0, 2)},
    "4_tmc": {"loss_tmc_weight": (0.0, 0.1)},
    "5_boundary": {"loss_boundary_weight": (0.0, 0.05)},
}


def test_tiny_ablation_rows_flip_one_thing_each_and_end_at_the_tiny_synthetic_config():
    cfgs = {name: Config.fromfile(f"configs/tiny/ablations/{name}.py") for name in TINY_ROWS}
    base = Config.fromfile("configs/tiny/salma_tiny_synthetic.py")
    assert cfgs["5_boundary"].to_dict() == base.to_dict()  # the last row is the demo config, whole
    baseline = cfgs["0_baseline"].model.grounding_encoder
    assert not baseline.enable_cma and baseline.mask_source == "none"
    assert (cfgs["0_baseline"].model.loss_tmc_weight, cfgs["0_baseline"].model.loss_boundary_weight) == (0, 0)
    for previous, name in zip(TINY_ROWS, TINY_ROWS[1:]):
        a, b = flat(cfgs[previous].to_dict()), flat(cfgs[name].to_dict())
        changed = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        assert changed == {f"model.{k}": v for k, v in TINY_FLIPS[name].items()}, name


# ------------------------------------------------------------------ InternVL3-2B (docs/backbones.md)
INTERNVL3 = "configs/SALMA-InternVL3-2B.py"


def test_salma_internvl3_2b_is_salma_1b_with_sa2va_in30_2b_settings():
    """Everything SALMA-1B sets (CMA/MBA, losses, decode rule, data, schedule) but the backbone's
    path and architecture and Sa2VA's in30_2b accumulation (8, sa2va_in30_2b.py:37); LoRA r128 /
    alpha 256, embeddings + LM head trained, lr 4e-5, batch 2, max_length 8192 and the qwen_chat
    template are the same in both (sa2va_in30_2b.py:31-42, 79-86)."""
    salma_1b, cfg = Config.fromfile("configs/SALMA-1B.py"), Config.fromfile(INTERNVL3)
    a, b = flat(salma_1b.to_dict()), flat(cfg.to_dict())
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    backbone = {"internvl_path", "model.mllm.model_path", "tokenizer.path", "model.mllm.tokenizer.path",
                "accumulative_counts", "optim_wrapper.accumulative_counts"}
    assert changed - {k for k in changed if k.startswith("internvl3_2b_arch.")} == backbone | {"train_dataset.datasets",
                                                                                              "train_dataloader.dataset.datasets"}
    assert (cfg.accumulative_counts, cfg.optim_wrapper.accumulative_counts, cfg.train_dataloader.batch_size) == (8, 8, 2)
    mllm = cfg.model.mllm
    assert (mllm.llm_lora.r, mllm.llm_lora.lora_alpha, mllm.llm_lora.lora_dropout) == (128, 256, 0.05)
    assert mllm.trainable_embeddings and mllm.freeze_llm and mllm.freeze_visual_encoder
    assert cfg.optim_wrapper.optimizer.lr == 4e-5 and cfg.max_length == 8192
    assert cfg.model.grounding_encoder == salma_1b.model.grounding_encoder
    assert cfg.model.grounding_encoder.mask_token == "best_iou" and cfg.custom_hooks == salma_1b.custom_hooks
    # the readers differ from SALMA-1B's in their tokenizer only: InternVL3-2B's, the model's
    for ours, theirs in zip(cfg.train_dataset.datasets, salma_1b.train_dataset.datasets, strict=True):
        assert ours.tokenizer == mllm.tokenizer and {**ours, "tokenizer": theirs.tokenizer} == theirs
    assert cfg.train_dataloader.dataset == cfg.train_dataset
    assert cfg.test_datasets == salma_1b.test_datasets and cfg.test_options == salma_1b.test_options
    assert cfg.internvl3_2b_arch.text_config.model_type == "qwen2"


def test_internvl3_2b_path_comes_from_the_user(monkeypatch):
    """SALMA_INTERNVL3_PATH (or model.mllm.model_path) names the folder; no absolute default."""
    for path in (INTERNVL3, "configs/Sa2VA-InternVL3-2B.py"):
        monkeypatch.delenv("SALMA_INTERNVL3_PATH", raising=False)
        default = Config.fromfile(path)
        assert default.model.mllm.model_path == "checkpoints/InternVL3-2B"
        monkeypatch.setenv("SALMA_INTERNVL3_PATH", "/somewhere/InternVL3-2B")
        cfg = Config.fromfile(path)
        assert cfg.model.mllm.model_path == cfg.model.mllm.tokenizer.path == "/somewhere/InternVL3-2B"
        assert {d.tokenizer.path for d in cfg.train_dataset.datasets} == {"/somewhere/InternVL3-2B"}


def test_internvl3_2b_architecture_builds_at_real_size_on_the_meta_device():
    """internvl3_2b_arch (random-weight builds): InternViT-300M + Qwen2.5-1.5B, about 2.09B parameters."""
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    arch = Config.fromfile(INTERNVL3).internvl3_2b_arch.to_dict()
    with torch.device("meta"):
        model = InternVLForConditionalGeneration(InternVLConfig(**arch))
    assert 2.05e9 < sum(p.numel() for p in model.parameters()) < 2.12e9
    assert model.config.image_seq_length == 256 and model.config.text_config.num_hidden_layers == 28


@pytest.mark.parametrize("salma_path,base_path", SALMA_PAIRS[1:])
def test_ablation_rows_apply_on_the_other_backbones_baselines(salma_path, base_path):
    """The rows of configs/ablations flip backbone-free keys: applied in order on the InternVL3-2B,
    Qwen2.5-VL-3B or Qwen3-VL-4B baseline they end at that SALMA config, as on the 1B they end at
    SALMA-1B."""
    chain = ["configs/Sa2VA-1B.py"] + [f"configs/ablations/{row}.py" for row in
                                       ("1_cma_no_mba", "2_mba_gate", "3_topk_routing", "4_tmc", "5_boundary")]
    model = flat(Config.fromfile(base_path).model.to_dict())
    for prev, row in zip(chain, chain[1:]):
        before, after = flat(Config.fromfile(prev).model.to_dict()), flat(Config.fromfile(row).model.to_dict())
        delta = {k: after[k] for k in after if before.get(k) != after[k]}
        assert not any(k.startswith("mllm.") for k in delta), row
        model.update(delta)
    assert model == flat(Config.fromfile(salma_path).model.to_dict())
    assert Config.fromfile(chain[-1]).custom_hooks == Config.fromfile(salma_path).custom_hooks


# ------------------------------------------------------------------ Qwen2.5-VL-3B, Qwen3-VL-4B (docs/backbones.md)
# (config, its env var, default folder, model_type, patch, statistics, per-GPU batch, arch key, parameters)
QWEN_VL = {
    "configs/SALMA-Qwen2.5-VL-3B.py": dict(env="SALMA_QWEN25VL_PATH", default="checkpoints/Qwen2.5-VL-3B-Instruct",
                                           model_type="qwen2_5_vl", patch=14, stats="clip", batch=2,
                                           arch="qwen2_5_vl_3b_arch", params=(3.74e9, 3.76e9)),
    "configs/SALMA-Qwen3-VL-4B.py": dict(env="SALMA_QWEN3VL_PATH", default="checkpoints/Qwen3-VL-4B-Instruct",
                                         model_type="qwen3_vl", patch=16, stats="half", batch=1,
                                         arch="qwen3_vl_4b_arch", params=(4.42e9, 4.46e9)),
}
INTERNVL_TILE_KEYS = {"image_size", "image_seq_length", "min_dynamic_patch", "max_dynamic_patch"}


@pytest.mark.parametrize("path", sorted(QWEN_VL))
def test_salma_qwen_vl_is_salma_1b_with_sa2va_qwen_settings(path):
    """Everything SALMA-1B sets (CMA/MBA, losses, decode rule, data, schedule) but the backbone
    (QwenVLMLLM, its folder, the readers' vision inputs) and what Sa2VA's Qwen configs change:
    accumulation 8 (sa2va_qwen25_3b.py:38 / sa2va_qwen3_4b.py:38) and, for Qwen3-VL-4B, batch 1
    (sa2va_qwen3_4b.py:37). LoRA r128 / alpha 256, embeddings + LM head trained, lr 4e-5,
    max_length 8192, qwen_chat without a system message and bf16 are the same in both."""
    spec = QWEN_VL[path]
    salma_1b, cfg = Config.fromfile("configs/SALMA-1B.py"), Config.fromfile(path)
    a, b = flat(salma_1b.to_dict()), flat(cfg.to_dict())
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    expected = {"qwen_vl_path", "tokenizer.path", "model.mllm.type", "model.mllm.model_path", "model.mllm.tokenizer.path",
                "model.mllm.untie_embeddings", "accumulative_counts", "optim_wrapper.accumulative_counts",
                "internvl_tile_keys", "mix",
                "train_dataset.datasets", "train_dataset.repeats", "train_dataloader.dataset.datasets",
                "train_dataloader.dataset.repeats"}
    if spec["batch"] != 2:
        expected |= {"batch_size", "train_dataloader.batch_size", "train_dataloader.sampler.per_device_batch_size"}
    own = {k for k in changed if k.startswith((f"{spec['arch']}.", "vision.", "test_datasets."))}
    assert changed - own == expected
    assert {k for k in own if k.startswith("test_datasets.")} == {
        f"test_datasets.{name}.dataset.vision.{key}" for name in salma_1b.test_datasets for key in cfg.vision}
    assert (cfg.accumulative_counts, cfg.optim_wrapper.accumulative_counts) == (8, 8)
    assert cfg.train_dataloader.batch_size == cfg.train_dataloader.sampler.per_device_batch_size == spec["batch"]
    mllm = cfg.model.mllm
    assert mllm.type == "QwenVLMLLM" and mllm.torch_dtype == "bfloat16" and cfg.optim_wrapper.dtype == "bfloat16"
    assert (mllm.llm_lora.r, mllm.llm_lora.lora_alpha, mllm.llm_lora.lora_dropout) == (128, 256, 0.05)
    assert mllm.trainable_embeddings and mllm.freeze_llm and mllm.freeze_visual_encoder
    assert mllm.untie_embeddings  # Sa2VA's modules_to_save copies the tied lm_head and embed_tokens apart (:88)
    assert cfg.optim_wrapper.optimizer.lr == 4e-5 and cfg.max_length == 8192
    assert cfg.model.grounding_encoder == salma_1b.model.grounding_encoder
    assert cfg.model.grounding_encoder.mask_token == "best_iou" and cfg.custom_hooks == salma_1b.custom_hooks
    assert {k: v for k, v in cfg.model.items() if k != "mllm"} == {k: v for k, v in salma_1b.model.items() if k != "mllm"}
    # the readers are SALMA-1B's (regions left out) with this model's tokenizer and vision inputs,
    # without InternVL's tiling arguments
    theirs = [d for d in salma_1b.train_dataset.datasets if d.type != "OspreyDataset"]
    for ours, base in zip(cfg.train_dataset.datasets, theirs, strict=True):
        assert ours.tokenizer == mllm.tokenizer and ours.vision == cfg.vision
        assert {**ours, "tokenizer": base.tokenizer} == {k: v for k, v in {**base, "vision": cfg.vision}.items()
                                                         if k not in INTERNVL_TILE_KEYS}
    assert cfg.train_dataloader.dataset == cfg.train_dataset
    assert cfg.test_options == salma_1b.test_options
    for name, entry in salma_1b.test_datasets.items():
        assert cfg.test_datasets[name] == {**entry, "dataset": {**entry.dataset, "vision": cfg.vision}}


@pytest.mark.parametrize("path", sorted(QWEN_VL))
def test_qwen_vl_vision_inputs_are_the_models_with_sa2va_pixel_bounds(path):
    """Qwen2.5-VL: patch 14, CLIP statistics; Qwen3-VL: patch 16, statistics 0.5; both 2x2 merge,
    temporal patch 2 and Sa2VA's bounds (projects/sa2va/datasets/base.py:73-77: images 512..2048 x
    28^2 pixels, video frames 128..512 x 28^2, QwenVLPatches' defaults)."""
    import inspect

    from projects.salma.datasets.vision_inputs import QwenVLPatches, build_vision_inputs

    spec, vision = QWEN_VL[path], Config.fromfile(path).vision.to_dict()
    assert vision == dict(family="qwen_vl", patch_size=spec["patch"], merge_size=2, temporal_patch_size=2,
                          min_pixels=512 * 28 * 28, max_pixels=2048 * 28 * 28, video_min_pixels=128 * 28 * 28,
                          video_max_pixels=512 * 28 * 28, image_mean=spec["stats"], image_std=spec["stats"])
    defaults = {k: p.default for k, p in inspect.signature(QwenVLPatches).parameters.items()}
    assert all(vision[k] == defaults[k] for k in ("min_pixels", "max_pixels", "video_min_pixels", "video_max_pixels"))
    scheme = build_vision_inputs(vision)
    assert isinstance(scheme, QwenVLPatches) and scheme.factor == 2 * spec["patch"]
    assert scheme.image_tokens(896, 672) == 896 * 672 // scheme.factor ** 2  # within the bounds: kept
    assert scheme.image_tokens(640, 480) >= 512 * 28 * 28 // scheme.factor ** 2 > 640 * 480 // scheme.factor ** 2


@pytest.mark.parametrize("path", QWEN_VL_CONFIGS)
def test_every_qwen_vl_reader_takes_the_qwen_vl_inputs(path):
    """Training and evaluation readers alike: tools/test.py completes each evaluation reader and
    refuses one whose vision.family is not the model's (build.check_vision_family)."""
    from types import SimpleNamespace

    from projects.salma.evaluation.runner import complete_dataset_cfg, resolve_runs

    cfg = Config.fromfile(path)
    assert cfg.model.mllm.type == "QwenVLMLLM"
    assert all(d.vision.family == "qwen_vl" and d.type != "OspreyDataset" for d in cfg.train_dataset.datasets)
    model = SimpleNamespace(mllm=SimpleNamespace(vision_family="qwen_vl"),
                            grounding_encoder=SimpleNamespace(image_size=1024))
    runs = resolve_runs(cfg)
    assert len(runs) == 14
    for run in runs:
        reader = complete_dataset_cfg(run, cfg.model.to_dict(), model)
        assert reader["vision"] == cfg.vision and reader["tokenizer"] == cfg.model.mllm.tokenizer, run.name
        assert not INTERNVL_TILE_KEYS & set(reader), run.name
    # the export's reader settings (tools/export.py) are these, and the training readers agree with them
    from projects.salma.build import _dataset_cfgs, reader_settings, trained_otherwise

    settings = reader_settings(cfg, model)
    assert settings["vision"] == cfg.vision and settings["max_length"] == 8192 and settings["system"] == ""
    assert trained_otherwise(settings, _dataset_cfgs(cfg)["train"]) == []
    with pytest.raises(ValueError, match="vision.family is 'qwen_vl' but the model's MLLM takes 'internvl'"):
        complete_dataset_cfg(runs[0], cfg.model.to_dict(), SimpleNamespace(
            mllm=SimpleNamespace(vision_family="internvl"), grounding_encoder=SimpleNamespace(image_size=1024)))


@pytest.mark.parametrize("path", QWEN_VL_CONFIGS)
def test_qwen_vl_path_comes_from_the_user(path, monkeypatch):
    """SALMA_QWEN25VL_PATH / SALMA_QWEN3VL_PATH name the folder of the model and of every reader's
    tokenizer; the default is relative."""
    spec = QWEN_VL[path.replace("Sa2VA-", "SALMA-")]
    monkeypatch.delenv(spec["env"], raising=False)
    default = Config.fromfile(path)
    assert default.model.mllm.model_path == default.model.mllm.tokenizer.path == spec["default"]
    assert not os.path.isabs(spec["default"])
    monkeypatch.setenv(spec["env"], "/somewhere/qwen-vl")
    cfg = Config.fromfile(path)
    assert cfg.model.mllm.model_path == cfg.model.mllm.tokenizer.path == "/somewhere/qwen-vl"
    assert {d.tokenizer.path for d in cfg.train_dataset.datasets} == {"/somewhere/qwen-vl"}
    assert all(d.tokenizer == cfg.model.mllm.tokenizer for d in cfg.train_dataset.datasets)


@pytest.mark.parametrize("path", sorted(QWEN_VL))
def test_qwen_vl_architecture_builds_at_real_size_on_the_meta_device(path):
    """The random-weight blocks (published config.json values) through QwenVLMLLM's own family
    table: Qwen2.5-VL-3B-Instruct 3.75 B parameters, Qwen3-VL-4B-Instruct 4.44 B (tied embeddings)."""
    import torch

    from projects.salma.models.mllm.qwen_vl import FAMILIES

    spec = QWEN_VL[path]
    arch = Config.fromfile(path)[spec["arch"]].to_dict()
    assert arch.pop("model_type") == spec["model_type"]
    config_cls, model_cls = FAMILIES[spec["model_type"]]
    with torch.device("meta"):
        model = model_cls(config_cls(**arch))
    low, high = spec["params"]
    assert low < sum(p.numel() for p in model.parameters()) < high
    assert model.lm_head.weight is model.get_input_embeddings().weight
    text, vision = model.config.text_config, model.config.vision_config
    assert text.num_hidden_layers == 36 and text.vocab_size == 151936 and vision.patch_size == spec["patch"]
    assert vision.out_hidden_size == text.hidden_size
    readers = Config.fromfile(path).vision  # the readers' patches are the tower's
    assert (readers.patch_size, readers.merge_size, readers.temporal_patch_size) == \
        (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size)


@pytest.mark.parametrize("path", sorted(QWEN_VL))
def test_qwen_vl_mllm_settings_build_the_wrapper_at_real_size_on_the_meta_device(path):
    """The config's model.mllm (LoRA r128 on the seven projections, embeddings + LM head trained,
    bf16) with its architecture block in place of the folder (and a tiny tokenizer): QwenVLMLLM
    builds, with the LLM's width and the qwen_vl readers' family."""
    import torch

    spec, cfg = QWEN_VL[path], Config.fromfile(path)
    mllm_cfg = dict(cfg.model.mllm.to_dict(), model_path=None, config=cfg[spec["arch"]].to_dict(),
                    tokenizer=dict(type="build_tiny_tokenizer", family="qwen_vl"))
    with torch.device("meta"):
        mllm = MODELS.build(mllm_cfg)
    assert mllm.family == spec["model_type"] and mllm.vision_family == "qwen_vl"
    assert mllm.hidden_size == cfg[spec["arch"]].text_config.hidden_size
    trainable = {n for n, p in mllm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "embed_tokens" in n or "lm_head" in n for n in trainable)
    assert not any(".visual." in n for n in trainable)
