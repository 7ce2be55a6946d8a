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
SALMA_PAIRS = [("configs/SALMA-1B.py", "configs/Sa2VA-1B.py"),
               ("configs/SALMA-InternVL3-2B.py", "configs/Sa2VA-InternVL3-2B.py")]
SALMA_AND_BASELINES = [p for pair in SALMA_PAIRS for p in pair]


@pytest.mark.parametrize("path", SALMA_AND_BASELINES)
def test_training_mix_is_the_seeds_whole_mix(path):
    mix = Config.fromfile(path).train_dataset
    assert mix.type == "DatasetMix" and len(mix.datasets) == len(mix.repeats)
    assert [(d.name, d.type, r) for d, r in zip(mix.datasets, mix.repeats)] == SEED_MIX
    entries = {d.name: d for d in mix.datasets}
    assert [entries[f"osprey_{k}"].kind for k in OSPREY_KINDS] == list(OSPREY_KINDS)
    assert all(entries[f"osprey_{k}"].data_file.endswith(f"Osprey-724K/osprey_{k}.json") for k in OSPREY_KINDS)
    assert [os.path.basename(f) for f in entries["osprey_conversation"].image_folder] == \
        ["train2014", "val2014", "train2017", "val2017"]
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


def test_ablation_rows_apply_on_the_internvl3_2b_baseline():
    """The rows of configs/ablations flip backbone-free keys: applied in order on the InternVL3-2B
    baseline they end at SALMA-InternVL3-2B, as on the 1B they end at SALMA-1B."""
    chain = ["configs/Sa2VA-1B.py"] + [f"configs/ablations/{row}.py" for row in
                                       ("1_cma_no_mba", "2_mba_gate", "3_topk_routing", "4_tmc", "5_boundary")]
    model = flat(Config.fromfile("configs/Sa2VA-InternVL3-2B.py").model.to_dict())
    for prev, row in zip(chain, chain[1:]):
        before, after = flat(Config.fromfile(prev).model.to_dict()), flat(Config.fromfile(row).model.to_dict())
        delta = {k: after[k] for k in after if before.get(k) != after[k]}
        assert not any(k.startswith("mllm.") for k in delta), row
        model.update(delta)
    assert model == flat(Config.fromfile(INTERNVL3).model.to_dict())
    assert Config.fromfile(chain[-1]).custom_hooks == Config.fromfile(INTERNVL3).custom_hooks
