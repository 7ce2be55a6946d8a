# SALMA-1B model (docs/design.md, "SALMA-1B"): InternVL2.5-1B + LoRA r128/α256, SAM-2.1 hiera-large with a trainable
# decoder, CMA (8 heads, multi-token, top-2 routing, no FiLM) with a 'gate' mask bias from the
# language-free prior, TMC (0.1, τ 0.15) and boundary (0.05) losses.
#
# Paths come from environment variables (or --cfg-options): SALMA_INTERNVL_PATH is a local
# InternVL2_5-1B folder (original remote-code or native layout); SALMA_SAM2_CKPT is Meta's
# sam2.1_hiera_large.pt or an HF-format SAM-2 folder.
_base_ = ["../scope.py"]

internvl_path = "{{$SALMA_INTERNVL_PATH:checkpoints/InternVL2_5-1B}}"
sam2_checkpoint = "{{$SALMA_SAM2_CKPT:checkpoints/sam2.1_hiera_large.pt}}"

tokenizer = dict(type="load_pretrained_tokenizer", path=internvl_path)

# The InternVL2.5-1B architecture, for random-weight builds (benchmarks, shape checks):
# set model.mllm.model_path=None and model.mllm.config=internvl2_5_1b_arch.
internvl2_5_1b_arch = dict(
    vision_config=dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        image_size=[448, 448],
        patch_size=[14, 14],
        attention_bias=True,
        use_qk_norm=False,
        norm_type="layer_norm",
        layer_scale_init_value=0.1,
        use_mean_pooling=True,  # InternViT has no final norm (transformers: Identity when True)
    ),
    text_config=dict(
        model_type="qwen2",
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
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

model = dict(
    type="VideoLLaVASAMModel",
    mllm=dict(
        type="InternVLMLLM",
        tokenizer=tokenizer,
        model_path=internvl_path,
        freeze_llm=True,
        freeze_visual_encoder=True,
        llm_lora=dict(r=128, lora_alpha=256, lora_dropout=0.05),
        trainable_embeddings=True,
        torch_dtype="bfloat16",
    ),
    grounding_encoder=dict(
        type="SAM2GroundingRunner",
        sam2=dict(checkpoint=sam2_checkpoint, size="large"),
        enable_cma=True,
        cma=dict(
            num_heads=8,
            use_multi_token=True,
            topk_tokens=2,
            use_film=False,
            enable_mask_bias=True,
            mask_bias_mode="gate",
            mask_bias_tau=1.0,
            mask_bias_strength=1.0,
        ),
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
    num_points=12544,
    max_expr_tokens=16,
)
