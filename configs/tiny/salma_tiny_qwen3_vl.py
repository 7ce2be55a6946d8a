# The tiny SALMA model on a Qwen3-VL-shaped MLLM (random weights, CPU): patch 16, statistics 0.5,
# interleaved multimodal rotary positions and deepstack features into the first LLM layer.
_base_ = ["./salma_tiny_qwen_vl.py"]

vision = dict(family="qwen_vl", patch_size=16, merge_size=2, temporal_patch_size=2,
              min_pixels=4 * 32 * 32, max_pixels=16 * 32 * 32, video_min_pixels=4 * 32 * 32,
              video_max_pixels=8 * 32 * 32, image_mean="half", image_std="half")

model = dict(
    mllm=dict(
        config=dict(
            _delete_=True,
            model_type="qwen3_vl",
            vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=16,
                               spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=128,
                               num_position_embeddings=64, deepstack_visual_indexes=[0]),
            text_config=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=32, vocab_size=512, max_position_embeddings=2048,
                             bos_token_id=None, eos_token_id=None,
                             rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[4, 6, 6],
                                                  mrope_interleaved=True)),
            tie_word_embeddings=False,
        ),
    ),
)
