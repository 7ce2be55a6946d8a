# SALMA on Qwen3-VL-4B-Instruct (Qwen3-VL ViT, 24 blocks, deepstack + Qwen3-4B): SALMA-1B with
# another backbone. Every SALMA choice of SALMA-1B stays (CMA + MBA gate, TMC + boundary losses and
# their warm-ups, the best-IoU decode rule, the data mix but for the region sets, schedule, bf16);
# what Sa2VA's Qwen3-VL-4B config (bytedance/Sa2VA
# projects/sa2va/configs/sa2va_qwenvl3/sa2va_qwen3_4b.py) sets differently from the 1B is taken
# from it, the rest is already the same:
#   batch 1 per GPU (sa2va_qwen3_4b.py:37; SALMA-1B: 2) and accumulative_counts 8 (:38, "on 16
#     gpus"; SALMA-1B: 4) -- per process, so 1 x 8 x 16 GPUs = 128 as Sa2VA; on 8 GPUs give
#     --cfg-options accumulative_counts=16 optim_wrapper.accumulative_counts=16 for the same
#     global batch;
#   the MLLM: QwenVLMLLM on transformers' Qwen3VLForConditionalGeneration (:76-78; bf16 weights,
#     projects/sa2va/models/mllm/qwen3vl.py:44-46);
#   the readers' vision inputs (:118-130, arch_type 'qwen' + Qwen3VLProcessor): dynamic
#     resolution, patch 16, 2x2 merge, temporal patch 2, statistics 0.5 (the model's
#     preprocessor_config.json), and Sa2VA's pixel bounds for every 'qwen' model: images within
#     512..2048 x 28^2 pixels, video frames within 128..512 x 28^2 (projects/sa2va/datasets/base.py:
#     71-77, :134-138, :206-209; resized to multiples of 32 here);
#   the same as SALMA-1B: LoRA r128 / alpha 256 / dropout 0.05 on the LLM's linear layers (:81-89,
#     target_modules=None: every nn.Linear of language_model, qwen3vl.py, i.e. the seven
#     projections, our default), frozen LLM and vision tower (:79-80), embed_tokens + lm_head
#     trained (:88, our trainable_embeddings=True), AdamW lr 4e-5, betas (0.9, 0.999), weight decay
#     0.05, clip 1.0, 5 % warm-up, 1 epoch (:40-47, :348-375), max_length 8192 (:34), template
#     qwen_chat (:32-33) without a system message (base.py:108-110; datasets/chat.py), bf16 (:355).
# Not taken: sa2va_qwen3_4b.py's data mix (RefCOCO/+ x5 with 5 objects per sample :148-181,
# Ref-SAV instead of SA-V pseudo labels :231-238, GCG x10/x100/x10/x10 :257-291): the backbones are
# compared on SALMA-1B's mix (tests/test_configs.py checks it). Left out of that mix: the five
# Osprey-724K region sets -- visual prompts need InternVL's fixed token grid per tile and the
# readers refuse them under vision.family='qwen_vl'; Sa2VA leaves them out too (:329-330,
# "remove vp due to not supported yet").
#
#   SALMA_QWEN3VL_PATH=/path/to/Qwen3-VL-4B-Instruct tools/dist_train.sh configs/SALMA-Qwen3-VL-4B.py 8
#
# The folder is Qwen/Qwen3-VL-4B-Instruct as published (transformers layout, config.json
# model_type 'qwen3_vl', tokenizer files); nothing is downloaded. docs/backbones.md.
_base_ = ["./SALMA-1B.py"]

qwen_vl_path = "{{$SALMA_QWEN3VL_PATH:checkpoints/Qwen3-VL-4B-Instruct}}"
tokenizer = dict(type="load_pretrained_tokenizer", path=qwen_vl_path)
# Every reader's LLM-side image inputs (datasets/vision_inputs.py, QwenVLPatches).
vision = dict(family="qwen_vl", patch_size=16, merge_size=2, temporal_patch_size=2,
              min_pixels=512 * 28 * 28, max_pixels=2048 * 28 * 28,
              video_min_pixels=128 * 28 * 28, video_max_pixels=512 * 28 * 28,
              image_mean="half", image_std="half")

# The Qwen3-VL-4B-Instruct architecture (its published config.json), for random-weight builds
# (benchmarks, shape checks): set model.mllm.model_path=None and model.mllm.config=qwen3_vl_4b_arch.
qwen3_vl_4b_arch = dict(
    model_type="qwen3_vl",
    vision_config=dict(
        depth=24,
        hidden_size=1024,
        intermediate_size=4096,
        num_heads=16,
        hidden_act="gelu_pytorch_tanh",
        in_channels=3,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=2560,
        num_position_embeddings=2304,
        deepstack_visual_indexes=[5, 11, 17],
    ),
    text_config=dict(  # Qwen3-4B
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        attention_bias=False,
        tie_word_embeddings=True,
        rope_parameters=dict(rope_type="default", rope_theta=5000000.0, mrope_section=[24, 20, 20],
                             mrope_interleaved=True),
    ),
    tie_word_embeddings=True,
)

# The LM head is tied to the embeddings in this checkpoint; Sa2VA trains both through peft's
# modules_to_save=['lm_head', 'embed_tokens'] (:88), which wraps each in its own copy: they train
# apart. untie_embeddings gives the LM head its copy (models/mllm/base.py).
model = dict(mllm=dict(type="QwenVLMLLM", tokenizer=tokenizer, model_path=qwen_vl_path, untie_embeddings=True))

# ------------------------------------------------------------------ data: SALMA-1B's, read with this model's inputs
batch_size = 1
accumulative_counts = 8
# InternVL's tiling arguments mean nothing to the Qwen-VL scheme: dropped from the readers.
internvl_tile_keys = ("image_size", "image_seq_length", "min_dynamic_patch", "max_dynamic_patch")
mix = [(dict({k: v for k, v in d.items() if k not in internvl_tile_keys}, tokenizer=tokenizer, vision=vision), r)
       for d, r in zip(_base_.train_dataset.datasets, _base_.train_dataset.repeats) if d.type != "OspreyDataset"]
train_dataset = dict(datasets=[d for d, _ in mix], repeats=[r for _, r in mix])
train_dataloader = dict(batch_size=batch_size, dataset=train_dataset,
                        sampler=dict(per_device_batch_size=batch_size))
optim_wrapper = dict(accumulative_counts=accumulative_counts)
# The evaluation readers (configs/_base_/datasets/benchmarks.py) take the same inputs: tools/test.py
# refuses a reader whose vision.family is not the model's (build.check_vision_family).
test_datasets = {name: dict(entry, dataset=dict(entry.dataset, vision=vision))
                 for name, entry in _base_.test_datasets.items()}
