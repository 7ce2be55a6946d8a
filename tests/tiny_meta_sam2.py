"""A small random Meta SAM-2 (``sam2.modeling`` built directly: no hydra, no torchvision) and the
transformers configs it converts onto. Shared by the converter tests (module-level parity) and
the video propagation test (end-to-end parity with ``SAM2VideoPredictor``).

Needs Meta's ``sam2`` package (test-only, see requirements-test.txt): import this module only
after ``pytest.importorskip("sam2")``.
"""
from __future__ import annotations

import torch
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine
from sam2.modeling.sam.transformer import RoPEAttention
from sam2.modeling.sam2_base import SAM2Base
from transformers import (
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2MaskDecoderConfig,
    Sam2PromptEncoderConfig,
    Sam2VideoConfig,
    Sam2VisionConfig,
)

IMAGE_SIZE = 128  # smallest size that keeps all of SAM-2's strides: features 32, 16, 8 (and 4 in Hiera)
D_MODEL = 256  # Meta's SAM2Base hard-codes the decoder widths (mlp 2048, iou head 256) around 256

# A 5-block Hiera: stages (1, 1, 2, 1); block 3 global; window 6 on the 8x8 stage-3 map exercises padding.
HIERA = dict(
    embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
    window_pos_embed_bkg_spatial_size=(4, 4), window_spec=(8, 4, 6, 4),
)
MEM_LAYERS, MEM_FFN, FUSER_LAYERS = 2, 256, 1

# The sam2.1 yaml's model settings (configs/sam2.1/sam2.1_hiera_l.yaml) plus what
# build_sam2[_video_predictor](..., apply_postprocessing=True) adds for the decoder; these are
# also transformers' Sam2VideoConfig / Sam2MaskDecoderConfig defaults.
SAM21_SETTINGS = dict(
    num_maskmem=7, image_size=IMAGE_SIZE, sigmoid_scale_for_mem_enc=20.0, sigmoid_bias_for_mem_enc=-10.0,
    use_mask_input_as_output_without_sam=True, directly_add_no_mem_embed=True, no_obj_embed_spatial=True,
    use_high_res_features_in_sam=True, multimask_output_in_sam=True, iou_prediction_use_sigmoid=True,
    use_obj_ptrs_in_encoder=True, add_tpos_enc_to_obj_ptrs=True, proj_tpos_enc_in_obj_ptrs=True,
    use_signed_tpos_enc_to_obj_ptrs=True, only_obj_ptrs_in_the_past_for_eval=True, pred_obj_scores=True,
    pred_obj_scores_mlp=True, fixed_no_obj_ptr=True, multimask_output_for_tracking=True,
    use_multimask_token_for_obj_ptr=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
    use_mlp_for_obj_ptr_proj=True,
    sam_mask_decoder_extra_args=dict(
        dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
        dynamic_multimask_stability_thresh=0.98,
    ),
)


def meta_small_sam2(model_cls: type[SAM2Base] = SAM2Base, *, seed: int = 0, **overrides) -> SAM2Base:
    """A small sam2.1-style ``model_cls`` (SAM2Base or SAM2VideoPredictor), every parameter
    perturbed so zero-initialised ones (pos_embed, ...) are tested too. ``overrides`` are extra
    constructor arguments (e.g. the video predictor's ``fill_hole_area``). The weights depend on
    ``seed`` only (not on what ran before in the process)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(model_cls, overrides)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _build(model_cls: type[SAM2Base], overrides: dict) -> SAM2Base:
    trunk = Hiera(**HIERA)
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=D_MODEL, normalize=True, scale=None, temperature=10000),
        d_model=D_MODEL, backbone_channel_list=trunk.channel_list, fpn_top_down_levels=[2, 3], fpn_interp_model="nearest",
    )
    rope = dict(rope_theta=10000.0, feat_sizes=[IMAGE_SIZE // 16] * 2, embedding_dim=D_MODEL, num_heads=1, downsample_rate=1, dropout=0.1)
    layer = MemoryAttentionLayer(
        activation="relu", cross_attention=RoPEAttention(rope_k_repeat=True, kv_in_dim=64, **rope), d_model=D_MODEL,
        dim_feedforward=MEM_FFN, dropout=0.1, pos_enc_at_attn=False, pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False, self_attention=RoPEAttention(**rope),
    )
    memory_encoder = MemoryEncoder(
        out_dim=64,
        position_encoding=PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None, temperature=10000),
        mask_downsampler=MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=Fuser(CXBlock(dim=D_MODEL, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True), num_layers=FUSER_LAYERS),
    )
    return model_cls(
        image_encoder=ImageEncoder(trunk=trunk, neck=neck, scalp=1),
        memory_attention=MemoryAttention(d_model=D_MODEL, pos_enc_at_input=True, layer=layer, num_layers=MEM_LAYERS),
        memory_encoder=memory_encoder,
        **{**SAM21_SETTINGS, **overrides},
    )


def hf_vision_config() -> Sam2VisionConfig:
    dims = [HIERA["embed_dim"] * 2**i for i in range(4)]
    return Sam2VisionConfig(
        backbone_config=Sam2HieraDetConfig(
            hidden_size=HIERA["embed_dim"], num_attention_heads=HIERA["num_heads"], image_size=[IMAGE_SIZE] * 2,
            embed_dim_per_stage=dims, num_attention_heads_per_stage=[HIERA["num_heads"] * 2**i for i in range(4)],
            blocks_per_stage=list(HIERA["stages"]), global_attention_blocks=list(HIERA["global_att_blocks"]),
            window_positional_embedding_background_size=list(HIERA["window_pos_embed_bkg_spatial_size"]),
            window_size_per_stage=list(HIERA["window_spec"]),
        ),
        backbone_channel_list=dims[::-1],
        backbone_feature_sizes=[[IMAGE_SIZE // s] * 2 for s in (4, 8, 16)],
        fpn_hidden_size=D_MODEL,
    )


def hf_image_config() -> Sam2Config:
    return Sam2Config(
        vision_config=hf_vision_config(),
        prompt_encoder_config=Sam2PromptEncoderConfig(image_size=IMAGE_SIZE),
        mask_decoder_config=Sam2MaskDecoderConfig(),
    )


def hf_video_config() -> Sam2VideoConfig:
    return Sam2VideoConfig(
        vision_config=hf_vision_config(),
        prompt_encoder_config=dict(image_size=IMAGE_SIZE),
        image_size=IMAGE_SIZE,
        memory_attention_num_layers=MEM_LAYERS,
        memory_attention_feed_forward_hidden_size=MEM_FFN,
        memory_attention_rope_feat_sizes=[IMAGE_SIZE // 16] * 2,
        memory_fuser_num_layers=FUSER_LAYERS,
    )
