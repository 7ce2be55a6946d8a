# SALMA on InternVL3-2B (InternViT-300M-448px-V2_5 + Qwen2.5-1.5B): SALMA-1B with another backbone.
# Every SALMA choice of SALMA-1B stays (CMA + MBA gate, TMC + boundary losses and their warm-ups,
# the best-IoU decode rule, the data mix, schedule, bf16); what Sa2VA's InternVL3-2B config
# (bytedance/Sa2VA projects/sa2va/configs/sa2va_in30_2b.py) sets differently from the 1B is taken
# from it, the rest is already the same:
#   accumulative_counts 8 (sa2va_in30_2b.py:37, "on 16 gpus"; SALMA-1B: 4) -- per process, so
#     2 x 8 x 16 GPUs = 256 as Sa2VA; on 8 GPUs give --cfg-options accumulative_counts=16
#     optim_wrapper.accumulative_counts=16 for the same global batch;
#   the same as SALMA-1B: LoRA r128 / alpha 256 / dropout 0.05 (:81-83), embed_tokens + lm_head
#     trained (:86, our trainable_embeddings=True), batch 2 per GPU (:36), AdamW lr 4e-5, betas
#     (0.9, 0.999), weight decay 0.05, clip 1.0, 5 % warm-up, 1 epoch (:39-46), max_length 8192
#     (:33), template qwen_chat (:31: ChatML without a system message, datasets/chat.py), bf16 (:340).
# Not taken: sa2va_in30_2b.py's data mix (RefCOCO/+ x5 with 5 objects per sample :134-167,
# Ref-SAV instead of SA-V pseudo labels :217-225, GCG x5/x50/x5/x5 :242-279, two Osprey sets
# :289-306): the backbones are compared on SALMA-1B's mix (tests/test_configs.py checks it).
#
#   SALMA_INTERNVL3_PATH=/path/to/InternVL3-2B tools/dist_train.sh configs/SALMA-InternVL3-2B.py 8
#
# The folder is OpenGVLab/InternVL3-2B (original remote-code layout, converted on load) or
# OpenGVLab/InternVL3-2B-hf (transformers' native layout); docs/backbones.md.
_base_ = ["./SALMA-1B.py"]

internvl_path = "{{$SALMA_INTERNVL3_PATH:checkpoints/InternVL3-2B}}"
tokenizer = dict(type="load_pretrained_tokenizer", path=internvl_path)

# The InternVL3-2B architecture, for random-weight builds (benchmarks, shape checks):
# set model.mllm.model_path=None and model.mllm.config=internvl3_2b_arch.
internvl3_2b_arch = dict(
    vision_config=dict(_base_.internvl2_5_1b_arch.vision_config),  # the same InternViT-300M (V2_5)
    text_config=dict(  # Qwen2.5-1.5B
        model_type="qwen2",
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151674,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    ),
    image_seq_length=256,
    downsample_ratio=0.5,
    projector_hidden_act="gelu",
    vision_feature_layer=-1,
    vision_feature_select_strategy="default",
    tie_word_embeddings=False,
)

model = dict(mllm=dict(tokenizer=tokenizer, model_path=internvl_path))

# ------------------------------------------------------------------ data: SALMA-1B's, read with this tokenizer
accumulative_counts = 8
train_dataset = dict(datasets=[dict(d, tokenizer=tokenizer) for d in _base_.train_dataset.datasets])
train_dataloader = dict(dataset=train_dataset)
optim_wrapper = dict(accumulative_counts=accumulative_counts)
