# The tiny SALMA model on a Qwen2.5-VL-shaped MLLM (random weights, CPU): the same SAM-2, CMA/MBA
# and losses as salma_tiny.py; the MLLM and its vision inputs are Qwen-VL's (dynamic resolution,
# patch 14, 2x2 merge, multimodal rotary positions). Qwen3-VL: salma_tiny_qwen3_vl.py.
_base_ = ["./salma_tiny.py"]

tokenizer = dict(type="build_tiny_tokenizer", family="qwen_vl")
# The readers' Qwen-VL inputs: images 4..16 and video frames 4..8 merged tokens (28 px each).
vision = dict(family="qwen_vl", patch_size=14, merge_size=2, temporal_patch_size=2,
              min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28, video_min_pixels=4 * 28 * 28,
              video_max_pixels=8 * 28 * 28, image_mean="clip", image_std="clip")

model = dict(
    mllm=dict(
        _delete_=True,
        type="QwenVLMLLM",
        tokenizer=tokenizer,
        config=dict(
            model_type="qwen2_5_vl",
            vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=128, window_size=56,
                               fullatt_block_indexes=[1]),
            text_config=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=512, max_position_embeddings=2048,
                             bos_token_id=None, eos_token_id=None,
                             rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[4, 6, 6])),
            tie_word_embeddings=False,
        ),
        freeze_llm=True,
        freeze_visual_encoder=True,
        llm_lora=dict(r=8, lora_alpha=16, lora_dropout=0.05),
    ),
)
