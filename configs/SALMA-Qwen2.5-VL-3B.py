# SALMA on Qwen2.5-VL-3B-Instruct (Qwen2.5-VL ViT, 32 blocks, window attention + Qwen2.5-3B): SALMA-1B
# with another backbone. Every SALMA choice of SALMA-1B stays (CMA + MBA gate, TMC + boundary losses
# and their warm-ups, the best-IoU decode rule, the data mix but for the region sets, schedule,
# bf16); what Sa2VA's Qwen2.5-VL-3B config (bytedance/Sa2VA
# projects/sa2va/configs/sa2va_qwenvl25/sa2va_qwen25_3b.py) sets differently from the 1B is taken
# from it, the rest is already the same:
#   accumulative_counts 8 (sa2va_qwen25_3b.py:38, "on 16 gpus"; SALMA-1B: 4) -- per process, so
#     2 x 8 x 16 GPUs = 256 as Sa2VA; on 8 GPUs give --cfg-options accumulative_counts=16
#     optim_wrapper.accumulative_counts=16 for the same global batch;
#   the MLLM: QwenVLMLLM on transformers' Qwen2_5_VLForConditionalGeneration (:76-78; bf16 weights,
#     projects/sa2va/models/mllm/qwenvl.py:40-42);
#   the readers' vision inputs (:118-130, arch_type 'qwen' + Qwen2_5_VLProcessor): dynamic
#     resolution, patch 14, 2x2 merge, temporal patch 2, CLIP statistics (the model's
#     preprocessor_config.json), images within 512..2048 x 28^2 pixels and video frames within
#     128..512 x 28^2 (projects/sa2va/datasets/base.py:71-77, :134-138, :206-209);
#   the same as SALMA-1B: LoRA r128 / alpha 256 / dropout 0.05 on the LLM's linear layers (:81-89,
#     target_modules=None: every nn.Linear of language_model, qwenvl.py:97-102, i.e. the seven
#     projections, our default), frozen LLM and vision tower (:79-80), embed_tokens + lm_head
#     trained (:88, our trainable_embeddings=True), batch 2 per GPU (:37), AdamW lr 4e-5, betas
#     (0.9, 0.999), weight decay 0.05, clip 1.0, 5 % warm-up, 1 epoch (:40-47, :348-375),
#     max_length 8192 (:34), template qwen_chat (:32-33) without a system message (base.py:108-110;
#     datasets/chat.py), bf16 (:355).
# Not taken: sa2va_qwen25_3b.py's data mix (RefCOCO/+ x5 with 5 objects per sample :148-181,
# Ref-SAV instead of SA-V pseudo labels :231-238, GCG x10/x100/x10/x10 :257-291): the backbones are
# compared on SALMA-1B's mix (tests/test_configs.py checks it). Left out of that mix: the five
# Osprey-724K region sets -- visual prompts need InternVL's fixed token grid per tile and the
# readers refuse them under vision.family='qwen_vl'; Sa2VA leaves them out too (:329-330,
# "remove vp due to not supported yet").
#
#   SALMA_QWEN25VL_PATH=/path/to/Qwen2.5-VL-3B-Instruct tools/dist_train.sh configs/SALMA-Qwen2.5-VL-3B.py 8
#
# The folder is Qwen/Qwen2.5-VL-3B-Instruct as published (transformers layout, config.json
# model_type 'qwen2_5_vl', tokenizer files); nothing is downloaded. docs/backbones.md.
_base_ = ["./SALMA-1B.py"]

qwen_vl_path = "{{$SALMA_QWEN25VL_PATH:checkpoints/Qwen2.5-VL-3B-Instruct}}"
tokenizer = dict(type="load_pretrained_tokenizer", path=qwen_vl_path)
# Every reader's LLM-side image inputs (datasets/vision_inputs.py, QwenVLPatches; these bounds are its defaults).
vision = dict(family="qwen_vl", patch_size=14, merge_size=2, temporal_patch_size=2,
              min_pixels=512 * 28 * 28, max_pixels=2048 * 28 * 28,
              video_min_pixels=128 * 28 * 28, video_max_pixels=512 * 28 * 28,
              image_mean="clip", image_std="clip")

# The Qwen2.5-VL-3B-Instruct architecture (its published config.json), for random-weight builds
# (benchmarks, shape checks): set model.mllm.model_path=None and model.mllm.config=qwen2_5_vl_3b_arch.
qwen2_5_vl_3b_arch = dict(
    model_type="qwen2_5_vl",
    vision_config=dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        hidden_act="silu",
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=2048,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
    ),
    text_config=dict(  # Qwen2.5-3B
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        tie_word_embeddings=True,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[16, 24, 24]),
    ),
    tie_word_embeddings=True,
)

# The LM head is tied to the embeddings in this checkpoint; Sa2VA trains both through peft's
# modules_to_save=['lm_head', 'embed_tokens'] (:88), which wraps each in its own copy: they train
# apart. untie_embeddings gives the LM head its copy (models/mllm/base.py).
model = dict(mllm=dict(type="QwenVLMLLM", tokenizer=tokenizer, model_path=qwen_vl_path, untie_embeddings=True))

# ------------------------------------------------------------------ data: SALMA-1B's, read with this model's inputs
accumulative_counts = 8
# InternVL's tiling arguments mean nothing to the Qwen-VL scheme: dropped from the readers.
internvl_tile_keys = ("image_size", "image_seq_length", "min_dynamic_patch", "max_dynamic_patch")
mix = [(dict({k: v for k, v in d.items() if k not in internvl_tile_keys}, tokenizer=tokenizer, vision=vision), r)
       for d, r in zip(_base_.train_dataset.datasets, _base_.train_dataset.repeats) if d.type != "OspreyDataset"]
train_dataset = dict(datasets=[d for d, _ in mix], repeats=[r for _, r in mix])
train_dataloader = dict(dataset=train_dataset)
optim_wrapper = dict(accumulative_counts=accumulative_counts)
# The evaluation readers (configs/_base_/datasets/benchmarks.py) take the same inputs: tools/test.py
# refuses a reader whose vision.family is not the model's (build.check_vision_family).
test_datasets = {name: dict(entry, dataset=dict(entry.dataset, vision=vision))
                 for name, entry in _base_.test_datasets.items()}
