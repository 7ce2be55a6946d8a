# A whole SALMA model small enough to build, train and predict on a CPU in seconds.
# Same modules as SALMA-1B (InternVL + LoRA, SAM-2 + CMA/MBA, TMC and boundary losses), random
# weights, a tiny offline tokenizer. Shapes: InternVL tiles 128 px -> 16 image tokens per tile;
# SAM-2 input 128 px -> features 8x8 (lowest) / 16 / 32, decoder logits 32x32.
_base_ = ["../_base_/scope.py"]

tokenizer = dict(type="build_tiny_tokenizer")
internvl_image_size = 128
internvl_image_tokens = 16  # (128 / 16)^2 patches, pixel-shuffled by 0.5 in each direction
sam_image_size = 128

model = dict(
    type="VideoLLaVASAMModel",
    mllm=dict(
        type="InternVLMLLM",
        tokenizer=tokenizer,
        config=dict(
            vision_config=dict(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                image_size=[internvl_image_size, internvl_image_size],
                patch_size=[16, 16],
                norm_type="layer_norm",
            ),
            text_config=dict(
                model_type="qwen2",
                hidden_size=128,
                intermediate_size=256,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=512,
                max_position_embeddings=2048,
                tie_word_embeddings=False,
            ),
            image_seq_length=internvl_image_tokens,
            downsample_ratio=0.5,
            tie_word_embeddings=False,
        ),
        freeze_llm=True,
        freeze_visual_encoder=True,
        llm_lora=dict(r=8, lora_alpha=16, lora_dropout=0.05),
    ),
    grounding_encoder=dict(
        type="SAM2GroundingRunner",
        sam2=dict(
            config=dict(
                vision_config=dict(
                    backbone_config=dict(
                        hidden_size=16,
                        image_size=[sam_image_size, sam_image_size],
                        blocks_per_stage=[1, 1, 2, 1],
                        embed_dim_per_stage=[16, 32, 64, 128],
                        num_attention_heads_per_stage=[1, 1, 2, 4],
                        window_size_per_stage=[8, 4, 4, 2],
                        global_attention_blocks=[3],
                        window_positional_embedding_background_size=[4, 4],
                    ),
                    backbone_channel_list=[128, 64, 32, 16],
                    backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
                    fpn_hidden_size=128,
                ),
                prompt_encoder_config=dict(hidden_size=128, image_size=sam_image_size, patch_size=16),
                mask_decoder_config=dict(hidden_size=128, mlp_dim=256, num_attention_heads=4, iou_head_hidden_dim=128),
            )
        ),
        enable_cma=True,
        cma=dict(num_heads=4, use_multi_token=True, topk_tokens=2, use_film=False, enable_mask_bias=True, mask_bias_mode="gate"),
        mask_source="pred",
        freeze_image_encoder=True,
        freeze_decoder=False,
        # the decoder's mask kept by the language decode: of tokens 1-3 the best predicted IoU, as
        # pengrui-art/SALMA and bytedance/Sa2VA decode ('first': token 0, an ablation)
        mask_token="best_iou",
    ),
    loss_llm_weight=1.0,
    loss_mask_weight=2.0,
    loss_dice_weight=0.5,
    loss_tmc_weight=0.1,
    loss_boundary_weight=0.05,
    tmc_temperature=0.15,
    num_points=1024,
)
