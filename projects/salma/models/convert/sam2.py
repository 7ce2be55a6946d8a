"""Meta's SAM-2 checkpoints (``sam2[.1]_hiera_{t,s,b+,l}.pt``) -> transformers' ``Sam2Model`` /
``Sam2VideoModel``.

Meta's ``.pt`` is ``{"model": state_dict}`` of ``sam2.modeling.sam2_base.SAM2Base`` (image encoder,
prompt encoder, mask decoder and the memory modules used for video). ``Sam2Model`` holds the image
part; ``Sam2VideoModel`` holds everything. The mapping below follows transformers' own conversion
scripts (``convert_sam2_to_hf.py`` / ``convert_sam2_video_to_hf.py``, not shipped in the wheel) but
as explicit full-key rules: every Meta key matches exactly one rule, or is listed as video-only
(ignorable when the target is the image model), or loading fails naming it.

Configs: ``sam2_config_for(size)`` / ``sam2_video_config_for(size)`` give the true hyperparameters
of the published models (Meta's ``configs/sam2.1/sam2.1_hiera_*.yaml``).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import (
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2MaskDecoderConfig,
    Sam2Model,
    Sam2PromptEncoderConfig,
    Sam2VideoConfig,
    Sam2VideoModel,
    Sam2VisionConfig,
)
from transformers.models.sam2_video.configuration_sam2_video import (
    Sam2VideoMaskDecoderConfig,
    Sam2VideoPromptEncoderConfig,
)

from .common import (
    CheckpointMismatchError,
    RenameRule,
    check_state_dict,
    load_safetensors_folder,
    matches_any,
    rename_keys,
    torch_load_state_dict,
)
from .sa2va_layout import SA2VA_SAM2_PREFIX, is_sa2va_folder, read_sa2va_part

__all__ = [
    "SAM2_SIZES",
    "sam2_config_for",
    "sam2_video_config_for",
    "infer_sam2_variant",
    "convert_sam2_state_dict",
    "load_sam2_from_meta",
    "load_sam2_from_hf",
    "load_sam2",
    "sam2_config_from_json",
    "convert_sam2_checkpoint",
]

# --------------------------------------------------------------------------------------------
# Configs of the published models
# --------------------------------------------------------------------------------------------

# Hiera hyperparameters per size, as in Meta's yaml configs (``trunk:``) and, where the yaml is
# silent (base+), ``Hiera``'s own defaults. Channels and heads double at each of the 4 stages
# (dim_mul = head_mul = 2), so one embed_dim / num_heads defines every stage.
SAM2_SIZES: dict[str, dict] = {
    "tiny": dict(
        embed_dim=96, num_heads=1, stages=[1, 2, 7, 2], global_att_blocks=[5, 7, 9],
        window_pos_embed_bkg_spatial_size=[7, 7], window_spec=[8, 4, 14, 7],
    ),
    "small": dict(
        embed_dim=96, num_heads=1, stages=[1, 2, 11, 2], global_att_blocks=[7, 10, 13],
        window_pos_embed_bkg_spatial_size=[7, 7], window_spec=[8, 4, 14, 7],
    ),
    "base_plus": dict(
        embed_dim=112, num_heads=2, stages=[2, 3, 16, 3], global_att_blocks=[12, 16, 20],
        window_pos_embed_bkg_spatial_size=[14, 14], window_spec=[8, 4, 14, 7],
    ),
    "large": dict(
        embed_dim=144, num_heads=2, stages=[2, 6, 36, 4], global_att_blocks=[23, 33, 43],
        window_pos_embed_bkg_spatial_size=[7, 7], window_spec=[8, 4, 16, 8],
    ),
}
_SIZE_ALIASES = {"t": "tiny", "s": "small", "b+": "base_plus", "base+": "base_plus", "l": "large"}
_VERSIONS = {"2": "2.0", "2.0": "2.0", "2.1": "2.1"}


def _canonical_size(size: str) -> str:
    size = _SIZE_ALIASES.get(size, size)
    if size not in SAM2_SIZES:
        raise ValueError(
            f"unknown SAM-2 size {size!r}; expected one of {sorted(SAM2_SIZES)} (or {sorted(_SIZE_ALIASES)})"
        )
    return size


def _canonical_version(version: str) -> str:
    if str(version) not in _VERSIONS:
        raise ValueError(f"unknown SAM-2 version {version!r}; expected '2.0' or '2.1'")
    return _VERSIONS[str(version)]


def _vision_config(size: str, image_size: int) -> Sam2VisionConfig:
    """Hiera trunk + FPN neck. The neck keeps the 3 highest-resolution levels (Meta's ``scalp=1``
    drops the stride-32 one): strides 4, 8, 16."""
    if image_size % 32:
        raise ValueError(f"SAM-2 image_size must be a multiple of 32 (Hiera's 4 stages), got {image_size}")
    h = SAM2_SIZES[_canonical_size(size)]
    dims = [h["embed_dim"] * 2**i for i in range(4)]
    backbone = Sam2HieraDetConfig(
        hidden_size=h["embed_dim"],
        num_attention_heads=h["num_heads"],
        image_size=[image_size, image_size],
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=[h["num_heads"] * 2**i for i in range(4)],
        blocks_per_stage=list(h["stages"]),
        global_attention_blocks=list(h["global_att_blocks"]),
        window_positional_embedding_background_size=list(h["window_pos_embed_bkg_spatial_size"]),
        window_size_per_stage=list(h["window_spec"]),
    )
    return Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=dims[::-1],
        backbone_feature_sizes=[[image_size // s, image_size // s] for s in (4, 8, 16)],
    )


def sam2_config_for(size: str, version: str = "2.1", image_size: int = 1024) -> Sam2Config:
    """Config of the published SAM-2 image model ``size`` (tiny / small / base_plus / large).

    ``version`` ('2.0' or '2.1') changes only the memory modules, so it is validated but does not
    change the image model. ``image_size`` other than 1024 rescales the feature sizes (for tests
    and ablations; the published weights were trained at 1024)."""
    _canonical_version(version)
    return Sam2Config(
        vision_config=_vision_config(size, image_size),
        prompt_encoder_config=Sam2PromptEncoderConfig(image_size=image_size),
        mask_decoder_config=Sam2MaskDecoderConfig(),
    )


def sam2_video_config_for(size: str, version: str = "2.1", image_size: int = 1024) -> Sam2VideoConfig:
    """Config of the published SAM-2 video model (image model + memory attention / encoder).

    sam2.1 differs from sam2 only here: it adds a learned occlusion embedding
    (``no_obj_embed_spatial``) and a projected temporal encoding of object pointers
    (``proj_tpos_enc_in_obj_ptrs``, ``add_tpos_enc_to_obj_ptrs``)."""
    is_v21 = _canonical_version(version) == "2.1"
    return Sam2VideoConfig(
        vision_config=_vision_config(size, image_size),
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(image_size=image_size),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(),
        image_size=image_size,
        memory_attention_rope_feat_sizes=[image_size // 16, image_size // 16],
        enable_occlusion_spatial_embedding=is_v21,
        enable_temporal_pos_encoding_for_object_pointers=is_v21,
    )


def infer_sam2_variant(meta_sd: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """(size, version) of a Meta state dict, from the trunk width / depth and the sam2.1-only keys."""
    if "image_encoder.trunk.pos_embed" not in meta_sd:
        raise ValueError("not a SAM-2 state dict: no 'image_encoder.trunk.pos_embed'")
    embed_dim = meta_sd["image_encoder.trunk.pos_embed"].shape[1]
    blocks = {int(m.group(1)) for k in meta_sd if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    for size, h in SAM2_SIZES.items():
        if h["embed_dim"] == embed_dim and sum(h["stages"]) == len(blocks):
            break
    else:
        raise ValueError(f"no published SAM-2 size has embed_dim={embed_dim} and {len(blocks)} Hiera blocks")
    version = "2.1" if "no_obj_embed_spatial" in meta_sd else "2.0"
    return size, version


# --------------------------------------------------------------------------------------------
# Key mapping: Meta (SAM2Base) -> transformers
# --------------------------------------------------------------------------------------------

_WB = r"(weight|bias)"
_ATTN = r"(q_proj|k_proj|v_proj)"


def _mlp3(meta_prefix: str, hf_prefix: str) -> list[RenameRule]:
    """Meta's 3-layer ``MLP.layers.{0,1,2}`` is transformers' ``proj_in`` / ``layers.0`` / ``proj_out``."""
    rows = (("0", "proj_in"), ("1", "layers.0"), ("2", "proj_out"))
    return [
        RenameRule(rf"{meta_prefix}\.layers\.{i}\.(?P<param>weight|bias)", rf"{hf_prefix}.{name}.\g<param>")
        for i, name in rows
    ]


# Image model: Hiera trunk, FPN neck, prompt encoder, mask decoder.
# (The 4 point embeddings are stacked separately, see ``_stack_point_embeddings``.)
_BLK, _HF_BLK = r"image_encoder\.trunk\.blocks\.(\d+)", r"vision_encoder.backbone.blocks.\1"
_TWL, _HF_TWL = r"sam_mask_decoder\.transformer\.layers\.(\d+)", r"mask_decoder.transformer.layers.\1"
_TWL_ATTN = r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
_FINAL = r"sam_mask_decoder\.transformer\.final_attn_token_to_image"
_HF_FINAL = "mask_decoder.transformer.final_attn_token_to_image"
_PE, _HF_PE = r"sam_prompt_encoder\.mask_downscaling", "prompt_encoder.mask_embed"
_IMAGE_RULES: list[RenameRule] = [
    # Hiera trunk
    RenameRule(r"image_encoder\.trunk\.(pos_embed|pos_embed_window)", r"vision_encoder.backbone.\1"),
    RenameRule(rf"image_encoder\.trunk\.patch_embed\.proj\.{_WB}", r"vision_encoder.backbone.patch_embed.projection.\1"),
    RenameRule(rf"{_BLK}\.norm([12])\.{_WB}", rf"{_HF_BLK}.layer_norm\2.\3"),
    RenameRule(rf"{_BLK}\.attn\.(qkv|proj)\.{_WB}", rf"{_HF_BLK}.attn.\2.\3"),
    RenameRule(rf"{_BLK}\.mlp\.layers\.0\.{_WB}", rf"{_HF_BLK}.mlp.proj_in.\2"),
    RenameRule(rf"{_BLK}\.mlp\.layers\.1\.{_WB}", rf"{_HF_BLK}.mlp.proj_out.\2"),
    RenameRule(rf"{_BLK}\.proj\.{_WB}", rf"{_HF_BLK}.proj.\2"),  # stage-transition blocks: dim -> 2*dim
    # FPN neck: Meta wraps each lateral 1x1 conv in a Sequential named ``conv``
    RenameRule(rf"image_encoder\.neck\.convs\.(\d+)\.conv\.{_WB}", r"vision_encoder.neck.convs.\1.\2"),
    # added to the lowest-resolution feature of a single image ("no memory")
    RenameRule(r"no_mem_embed", r"no_memory_embedding"),
    # prompt encoder
    RenameRule(
        r"sam_prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix",
        r"prompt_encoder.shared_embedding.positional_embedding",
    ),
    RenameRule(r"sam_prompt_encoder\.(not_a_point_embed|no_mask_embed)\.weight", r"prompt_encoder.\1.weight"),
    RenameRule(rf"{_PE}\.0\.{_WB}", rf"{_HF_PE}.conv1.\1"),
    RenameRule(rf"{_PE}\.1\.{_WB}", rf"{_HF_PE}.layer_norm1.\1"),
    RenameRule(rf"{_PE}\.3\.{_WB}", rf"{_HF_PE}.conv2.\1"),
    RenameRule(rf"{_PE}\.4\.{_WB}", rf"{_HF_PE}.layer_norm2.\1"),
    RenameRule(rf"{_PE}\.6\.{_WB}", rf"{_HF_PE}.conv3.\1"),
    # mask decoder: tokens, two-way transformer, upscaling, high-res projections, heads
    RenameRule(r"sam_mask_decoder\.(iou_token|mask_tokens|obj_score_token)\.weight", r"mask_decoder.\1.weight"),
    RenameRule(rf"{_TWL}\.{_TWL_ATTN}\.{_ATTN}\.{_WB}", rf"{_HF_TWL}.\2.\3.\4"),
    RenameRule(rf"{_TWL}\.{_TWL_ATTN}\.out_proj\.{_WB}", rf"{_HF_TWL}.\2.o_proj.\3"),
    RenameRule(rf"{_TWL}\.norm([1-4])\.{_WB}", rf"{_HF_TWL}.layer_norm\2.\3"),
    RenameRule(rf"{_TWL}\.mlp\.layers\.0\.{_WB}", rf"{_HF_TWL}.mlp.proj_in.\2"),
    RenameRule(rf"{_TWL}\.mlp\.layers\.1\.{_WB}", rf"{_HF_TWL}.mlp.proj_out.\2"),
    RenameRule(rf"{_FINAL}\.{_ATTN}\.{_WB}", rf"{_HF_FINAL}.\1.\2"),
    RenameRule(rf"{_FINAL}\.out_proj\.{_WB}", rf"{_HF_FINAL}.o_proj.\1"),
    RenameRule(
        rf"sam_mask_decoder\.transformer\.norm_final_attn\.{_WB}", r"mask_decoder.transformer.layer_norm_final_attn.\1"
    ),
    RenameRule(rf"sam_mask_decoder\.output_upscaling\.0\.{_WB}", r"mask_decoder.upscale_conv1.\1"),
    RenameRule(rf"sam_mask_decoder\.output_upscaling\.1\.{_WB}", r"mask_decoder.upscale_layer_norm.\1"),
    RenameRule(rf"sam_mask_decoder\.output_upscaling\.3\.{_WB}", r"mask_decoder.upscale_conv2.\1"),
    RenameRule(rf"sam_mask_decoder\.(conv_s0|conv_s1)\.{_WB}", r"mask_decoder.\1.\2"),
    *_mlp3(r"sam_mask_decoder\.output_hypernetworks_mlps\.(\d+)", r"mask_decoder.output_hypernetworks_mlps.\1"),
    *_mlp3(r"sam_mask_decoder\.iou_prediction_head", r"mask_decoder.iou_prediction_head"),
    *_mlp3(r"sam_mask_decoder\.pred_obj_score_head", r"mask_decoder.pred_obj_score_head"),
]

# Video-only: memory attention, memory encoder, object pointers. ``Sam2Model`` (the image model)
# has none of these, so for target="image" exactly these Meta keys are ignored (they are used only
# to propagate masks across frames); ``Sam2VideoModel`` maps them all.
_MAL, _HF_MAL = r"memory_attention\.layers\.(\d+)", r"memory_attention.layers.\1"
_FUSER, _HF_FUSER = r"memory_encoder\.fuser\.layers\.(\d+)", r"memory_encoder.memory_fuser.layers.\1"
_VIDEO_ONLY_RULES: list[RenameRule] = [
    RenameRule(r"no_mem_pos_enc", r"no_memory_positional_encoding"),
    RenameRule(r"maskmem_tpos_enc", r"memory_temporal_positional_encoding"),
    RenameRule(r"no_obj_ptr", r"no_object_pointer"),
    RenameRule(r"no_obj_embed_spatial", r"occlusion_spatial_embedding_parameter"),  # sam2.1 only
    RenameRule(rf"mask_downsample\.{_WB}", r"mask_downsample.\1"),
    *_mlp3(r"obj_ptr_proj", r"object_pointer_proj"),
    RenameRule(rf"obj_ptr_tpos_proj\.{_WB}", r"temporal_positional_encoding_projection_layer.\1"),  # sam2.1 only
    RenameRule(rf"{_MAL}\.(self_attn|cross_attn_image)\.{_ATTN}\.{_WB}", rf"{_HF_MAL}.\2.\3.\4"),
    RenameRule(rf"{_MAL}\.(self_attn|cross_attn_image)\.out_proj\.{_WB}", rf"{_HF_MAL}.\2.o_proj.\3"),
    RenameRule(rf"{_MAL}\.(linear1|linear2)\.{_WB}", rf"{_HF_MAL}.\2.\3"),
    RenameRule(rf"{_MAL}\.norm([123])\.{_WB}", rf"{_HF_MAL}.layer_norm\2.\3"),
    RenameRule(rf"memory_attention\.norm\.{_WB}", r"memory_attention.layer_norm.\1"),
    # mask_downsampler.encoder.N: see _mask_downsampler_rule (needs the depth of the Sequential)
    RenameRule(rf"memory_encoder\.pix_feat_proj\.{_WB}", r"memory_encoder.feature_projection.\1"),
    RenameRule(rf"{_FUSER}\.gamma", rf"{_HF_FUSER}.scale"),
    RenameRule(rf"{_FUSER}\.dwconv\.{_WB}", rf"{_HF_FUSER}.depthwise_conv.\2"),
    RenameRule(rf"{_FUSER}\.norm\.{_WB}", rf"{_HF_FUSER}.layer_norm.\2"),
    RenameRule(rf"{_FUSER}\.pwconv([12])\.{_WB}", rf"{_HF_FUSER}.pointwise_conv\2.\3"),
    RenameRule(rf"memory_encoder\.out_proj\.{_WB}", r"memory_encoder.projection.\1"),
]
_MASK_DOWNSAMPLER = r"memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(weight|bias)"

# transformers' names of the video-only parameters (to read an HF video folder into the image model)
_HF_VIDEO_ONLY = (
    r"memory_attention\..*", r"memory_encoder\..*", r"mask_downsample\..*", r"object_pointer_proj\..*",
    r"temporal_positional_encoding_projection_layer\..*", r"no_memory_positional_encoding",
    r"memory_temporal_positional_encoding", r"no_object_pointer", r"occlusion_spatial_embedding_parameter",
)
_POINT_EMBEDDINGS = [f"sam_prompt_encoder.point_embeddings.{i}.weight" for i in range(4)]


def _check_target(target: str) -> None:
    if target not in ("image", "video"):
        raise ValueError(f"target must be 'image' (Sam2Model) or 'video' (Sam2VideoModel), got {target!r}")


def _mask_downsampler_rule(meta_keys: list[str]) -> RenameRule:
    """Meta's ``MaskDownSampler.encoder`` is one Sequential ``[conv, LayerNorm2d, GELU] * n + [conv]``;
    transformers splits it into ``layers.i.{conv,layer_norm}`` and ``final_conv``. The last index
    (3n) is the final conv."""
    indices = [int(m.group(1)) for k in meta_keys if (m := re.fullmatch(_MASK_DOWNSAMPLER, k))]
    final = max(indices, default=0)
    if final % 3:
        raise ValueError(f"unexpected memory_encoder.mask_downsampler layout: last module index {final} is not 3*n")

    def rename(match: re.Match) -> str | None:
        idx, param = int(match.group(1)), match.group(2)
        prefix = "memory_encoder.mask_downsampler"
        if idx == final:
            return f"{prefix}.final_conv.{param}"
        if idx % 3 == 0:
            return f"{prefix}.layers.{idx // 3}.conv.{param}"
        if idx % 3 == 1:
            return f"{prefix}.layers.{idx // 3}.layer_norm.{param}"
        return None  # index 3i+2 is a GELU: it has no parameters, so such a key stays unexpected

    return RenameRule(_MASK_DOWNSAMPLER, rename)


def _stack_point_embeddings(meta_sd: Mapping[str, torch.Tensor], source: str) -> torch.Tensor:
    """Meta keeps 4 ``nn.Embedding(1, C)`` (pos / neg point, box corners); transformers one
    ``nn.Embedding(4, C)``, rows in the same order."""
    absent = [k for k in _POINT_EMBEDDINGS if k not in meta_sd]
    if absent:
        raise CheckpointMismatchError(missing=absent, source=source)
    return torch.cat([meta_sd[k] for k in _POINT_EMBEDDINGS], dim=0)


def convert_sam2_state_dict(
    meta_sd: Mapping[str, torch.Tensor], target: str = "image", *, source: str = "Meta SAM-2 state dict"
) -> dict[str, torch.Tensor]:
    """Rename a Meta SAM-2 state dict for ``Sam2Model`` (target='image') or ``Sam2VideoModel``
    (target='video').

    For 'image', the video-only keys (``_VIDEO_ONLY_RULES``) are left out; any other key no rule
    covers raises :class:`CheckpointMismatchError`. Missing keys are found by the loader, which
    compares against the model."""
    _check_target(target)
    video_rules = [*_VIDEO_ONLY_RULES, _mask_downsampler_rule(list(meta_sd))]
    keys = [k for k in meta_sd if k not in _POINT_EMBEDDINGS]
    if target == "image":
        keys = [k for k in keys if not any(rule.apply(k) is not None for rule in video_rules)]
        rules = _IMAGE_RULES
    else:
        rules = [*_IMAGE_RULES, *video_rules]
    mapping = rename_keys(keys, rules, source=source)
    out = {new: meta_sd[old] for old, new in mapping.items()}
    out["prompt_encoder.point_embed.weight"] = _stack_point_embeddings(meta_sd, source)
    # transformers keeps two copies of the same random-Fourier matrix (Meta's single ``pe_layer``):
    # one in the prompt encoder for prompts, one for the image-wide dense positional encoding.
    out["shared_image_embedding.positional_embedding"] = out["prompt_encoder.shared_embedding.positional_embedding"]
    return out


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _build_and_load(model_cls: type, config, state_dict: dict[str, torch.Tensor], *, source: str, dtype):
    model = model_cls(config)
    check_state_dict(state_dict, model.state_dict(), source=source)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    return model.to(dtype) if dtype is not None else model


def load_sam2_from_meta(
    path_or_sd: str | Path | Mapping[str, torch.Tensor],
    size: str | None = None,
    version: str | None = None,
    *,
    target: str = "image",
    config: Sam2Config | Sam2VideoConfig | None = None,
    image_size: int = 1024,
    dtype: torch.dtype | None = None,
    source: str | None = None,
) -> Sam2Model | Sam2VideoModel:
    """Build ``Sam2Model`` (target='image') or ``Sam2VideoModel`` (target='video') from a Meta ``.pt``
    (``{"model": state_dict}``) or its state dict.

    ``size`` / ``version`` default to what the state dict shows (:func:`infer_sam2_variant`); when
    given, they must agree with it. ``config`` replaces the published config (e.g. tiny test models);
    then ``size`` / ``version`` must be None. ``source`` names a given state dict in errors."""
    _check_target(target)
    if isinstance(path_or_sd, (str, Path)):
        source = str(path_or_sd)
        meta_sd = torch_load_state_dict(path_or_sd, key="model")
    else:
        source, meta_sd = source or "Meta SAM-2 state dict", dict(path_or_sd)
    if config is None:
        found_size, found_version = infer_sam2_variant(meta_sd)
        if size is not None and _canonical_size(size) != found_size:
            raise ValueError(f"{source}: size {size!r} requested but the checkpoint is hiera {found_size}")
        if version is not None and _canonical_version(version) != found_version:
            raise ValueError(f"{source}: version {version} requested but the checkpoint is sam{found_version}")
        config_fn = sam2_config_for if target == "image" else sam2_video_config_for
        config = config_fn(found_size, found_version, image_size=image_size)
    elif size is not None or version is not None:
        raise ValueError("pass either config or size/version, not both")
    expected_config = Sam2Config if target == "image" else Sam2VideoConfig
    if type(config) is not expected_config:
        raise ValueError(f"target {target!r} needs a {expected_config.__name__}, got {type(config).__name__}")
    state_dict = convert_sam2_state_dict(meta_sd, target=target, source=source)
    model_cls = Sam2Model if target == "image" else Sam2VideoModel
    return _build_and_load(model_cls, config, state_dict, source=source, dtype=dtype)


def _video_config_from_json(config_dict: dict) -> Sam2VideoConfig:
    """Sam2VideoConfig from its config.json. transformers 5.17's ``Sam2VideoConfig.__post_init__``
    turns a *dict* ``mask_decoder_config`` into a ``Sam2VideoPromptEncoderConfig`` (a typo in the
    library); passing config objects avoids it."""
    d = dict(config_dict)
    d["prompt_encoder_config"] = Sam2VideoPromptEncoderConfig(**d["prompt_encoder_config"])
    d["mask_decoder_config"] = Sam2VideoMaskDecoderConfig(**d["mask_decoder_config"])
    return Sam2VideoConfig(**d)


def sam2_config_from_json(path: str | Path) -> Sam2Config | Sam2VideoConfig:
    """A SAM-2 config from an HF ``config.json`` (model_type 'sam2' or 'sam2_video')."""
    config_dict = json.loads(Path(path).read_text(encoding="utf-8"))
    model_type = config_dict.get("model_type")
    if model_type == "sam2":
        return Sam2Config(**{k: v for k, v in config_dict.items() if k != "model_type"})
    if model_type == "sam2_video":
        return _video_config_from_json(config_dict)
    raise ValueError(f"{path}: model_type {model_type!r} is not 'sam2' or 'sam2_video'")


def load_sam2_from_hf(
    folder: str | Path, *, target: str = "image", dtype: torch.dtype | None = None
) -> Sam2Model | Sam2VideoModel:
    """Load an HF-format SAM-2 folder (config.json + safetensors) written by ``save_pretrained``.

    A 'sam2_video' folder serves both targets (for 'image', its video-only weights are left out);
    a 'sam2' folder has no memory weights, so it cannot give the video model."""
    _check_target(target)
    folder = Path(folder)
    config_dict = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model_type = config_dict.get("model_type")
    if model_type not in ("sam2", "sam2_video"):
        raise ValueError(f"{folder}: model_type {model_type!r} is not 'sam2' or 'sam2_video'")
    if target == "video" and model_type == "sam2":
        raise ValueError(
            f"{folder} is an image-only SAM-2 (model_type 'sam2'): it has no memory weights for the video model"
        )
    state_dict = load_safetensors_folder(folder)
    if model_type == "sam2":
        config = Sam2Config.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        return _build_and_load(Sam2Model, config, state_dict, source=str(folder), dtype=dtype)
    video_config = _video_config_from_json(config_dict)
    if target == "video":
        return _build_and_load(Sam2VideoModel, video_config, state_dict, source=str(folder), dtype=dtype)
    image_config = Sam2Config(
        vision_config=video_config.vision_config,
        prompt_encoder_config=Sam2PromptEncoderConfig(**video_config.prompt_encoder_config.to_dict()),
        mask_decoder_config=Sam2MaskDecoderConfig(**video_config.mask_decoder_config.to_dict()),
    )
    image_sd = {k: v for k, v in state_dict.items() if not matches_any(k, _HF_VIDEO_ONLY)}
    return _build_and_load(Sam2Model, image_config, image_sd, source=str(folder), dtype=dtype)


def load_sam2(
    path: str | Path,
    *,
    target: str = "image",
    size: str | None = None,
    version: str | None = None,
    config: Sam2Config | Sam2VideoConfig | None = None,
    image_size: int = 1024,
    dtype: torch.dtype | None = None,
) -> Sam2Model | Sam2VideoModel:
    """One entry point: a Meta ``.pt`` / ``.pth`` file is converted (see :func:`load_sam2_from_meta`
    for size / version / config), an HF folder is loaded (:func:`load_sam2_from_hf`), and a Sa2VA
    release folder's SAM-2 (Meta's layout, see :mod:`.sa2va`) is converted like a ``.pt``."""
    path = Path(path)
    if path.is_file() and path.suffix in (".pt", ".pth"):
        return load_sam2_from_meta(
            path, size, version, target=target, config=config, image_size=image_size, dtype=dtype
        )
    if is_sa2va_folder(path):
        return load_sam2_from_meta(
            read_sa2va_part(path, "sam2"), size, version, target=target, config=config, image_size=image_size,
            dtype=dtype, source=f"{path} ({SA2VA_SAM2_PREFIX}*, Meta's layout)",
        )
    if path.is_dir() and (path / "config.json").is_file():
        if size is not None or version is not None or config is not None:
            raise ValueError(f"{path} is an HF folder: its config.json defines the model (no size/version/config)")
        return load_sam2_from_hf(path, target=target, dtype=dtype)
    raise FileNotFoundError(f"{path}: neither a Meta SAM-2 .pt/.pth file nor a folder with config.json (HF or Sa2VA)")


def convert_sam2_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    size: str | None = None,
    version: str | None = None,
    target: str = "video",
    config: Sam2Config | Sam2VideoConfig | None = None,
    image_size: int = 1024,
    dtype: torch.dtype | None = None,
) -> Path:
    """Convert a Meta ``.pt`` into an HF folder (``save_pretrained``). The default target 'video'
    keeps every weight; :func:`load_sam2_from_hf` reads such a folder as either model."""
    model = load_sam2_from_meta(
        checkpoint, size, version, target=target, config=config, image_size=image_size, dtype=dtype
    )
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    return out_dir
