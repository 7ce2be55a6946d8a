"""Meta SAM-2 -> transformers Sam2Model / Sam2VideoModel: numerical equivalence with Meta's own
implementation on a small random model, strict key accounting, the published configs, and the CLI.

Needs Meta's ``sam2`` package (test-only, see requirements-test.txt); skipped without it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

sam2 = pytest.importorskip("sam2", reason="Meta's sam2 is a test-only extra: see requirements-test.txt")

from transformers import Sam2Model, Sam2VideoModel  # noqa: E402

from projects.salma.models.convert.common import CheckpointMismatchError, check_state_dict  # noqa: E402
from projects.salma.models.convert.sam2 import (  # noqa: E402
    convert_sam2_state_dict,
    infer_sam2_variant,
    load_sam2,
    load_sam2_from_meta,
    sam2_config_for,
    sam2_video_config_for,
)
from tiny_meta_sam2 import D_MODEL, IMAGE_SIZE, hf_image_config, hf_video_config, meta_small_sam2  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def meta_model():
    return meta_small_sam2()


@pytest.fixture(scope="module")
def hf_image(meta_model) -> Sam2Model:
    return load_sam2_from_meta(meta_model.state_dict(), target="image", config=hf_image_config())


@pytest.fixture(scope="module")
def hf_video(meta_model) -> Sam2VideoModel:
    return load_sam2_from_meta(meta_model.state_dict(), target="video", config=hf_video_config())


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def _meta_image_features(meta, image: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """SAM2ImagePredictor.set_image's features (its module imports torchvision, so inlined):
    FPN levels with conv_s0 / conv_s1 applied and no_mem_embed added to the lowest resolution."""
    backbone_out = meta.forward_image(image)
    _, feats, pos, sizes = meta._prepare_backbone_features(backbone_out)
    feats[-1] = feats[-1] + meta.no_mem_embed
    as_maps = [f.permute(1, 2, 0).reshape(image.shape[0], -1, *s) for f, s in zip(feats, sizes)]
    return as_maps, [p.permute(1, 2, 0).reshape(image.shape[0], -1, *s) for p, s in zip(pos, sizes)]


@torch.no_grad()
def test_image_features_match_meta(meta_model, hf_image, image):
    meta_feats, meta_pos = _meta_image_features(meta_model, image)
    hf_feats = hf_image.get_image_embeddings(image)
    assert [tuple(f.shape) for f in hf_feats] == [(1, 32, 32, 32), (1, 64, 16, 16), (1, D_MODEL, 8, 8)]
    for hf_f, meta_f in zip(hf_feats, meta_feats):
        _close(hf_f, meta_f)
    hf_pos = hf_image.get_image_features(image).fpn_position_encoding
    for hf_p, meta_p in zip(hf_pos, meta_pos):
        _close(hf_p.permute(1, 2, 0).reshape(meta_p.shape), meta_p)


PROMPTS = {
    "one_point": dict(points=[[40.0, 50.0]], labels=[1]),
    "pos_neg_points": dict(points=[[40.0, 50.0], [90.0, 20.0]], labels=[1, 0]),
    "box": dict(box=[20.0, 30.0, 100.0, 110.0]),
}


@torch.no_grad()
@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_masks_and_iou_match_meta(meta_model, hf_image, image, prompt, multimask):
    spec = PROMPTS[prompt]
    feats, _ = _meta_image_features(meta_model, image)
    if "box" in spec:  # SAM2ImagePredictor turns a box into two corner points labelled 2 and 3
        coords, labels = torch.tensor([spec["box"]]).reshape(1, 2, 2), torch.tensor([[2, 3]])
        hf_prompt = dict(input_boxes=torch.tensor([[spec["box"]]]))
    else:
        coords, labels = torch.tensor([spec["points"]]), torch.tensor([spec["labels"]])
        hf_prompt = dict(input_points=coords[:, None], input_labels=labels[:, None])
    sparse, dense = meta_model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    meta_masks, meta_iou, _, meta_obj = meta_model.sam_mask_decoder(
        image_embeddings=feats[-1], image_pe=meta_model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
        repeat_image=False, high_res_features=feats[:-1],
    )
    out = hf_image(pixel_values=image, multimask_output=multimask, **hf_prompt)
    assert out.pred_masks.shape == (1, 1, 3 if multimask else 1, 32, 32)
    _close(out.pred_masks[:, 0], meta_masks)
    _close(out.iou_scores[:, 0], meta_iou)
    _close(out.object_score_logits[:, 0], meta_obj)


@torch.no_grad()
def test_video_model_memory_modules_match_meta(meta_model, hf_video, image):
    """The video-only mapping (memory encoder incl. the split mask downsampler, memory attention,
    object-pointer MLP) computes what Meta's modules compute; the image path is shared."""
    gen = torch.Generator().manual_seed(2)
    pix = torch.randn(1, D_MODEL, 8, 8, generator=gen)
    mask = torch.randn(1, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    meta_mem = meta_model.memory_encoder(pix, mask, skip_mask_sigmoid=True)
    hf_feat, hf_pos = hf_video.memory_encoder(pix, mask)
    _close(hf_feat, meta_mem["vision_features"])
    _close(hf_pos, meta_mem["vision_pos_enc"][0])

    curr, curr_pos = torch.randn(64, 1, D_MODEL, generator=gen), torch.randn(64, 1, D_MODEL, generator=gen)
    memory, memory_pos = torch.randn(128, 1, 64, generator=gen), torch.randn(128, 1, 64, generator=gen)
    expected = meta_model.memory_attention(curr=curr, memory=memory, curr_pos=curr_pos, memory_pos=memory_pos)
    actual = hf_video.memory_attention(
        current_vision_features=curr, memory=memory,
        current_vision_position_embeddings=curr_pos, memory_posision_embeddings=memory_pos,
    )
    _close(actual.reshape(expected.shape), expected)

    tokens = torch.randn(3, D_MODEL, generator=gen)
    _close(hf_video.object_pointer_proj(tokens), meta_model.obj_ptr_proj(tokens))
    _close(hf_video.get_image_embeddings(image)[-1], _meta_image_features(meta_model, image)[0][-1])


# --- strict key accounting -------------------------------------------------------------------


def _meta_pt(tmp_path: Path, state_dict: dict, name: str = "model.pt") -> Path:
    path = tmp_path / name
    torch.save({"model": state_dict}, path)
    return path


def test_missing_key_is_named(meta_model, tmp_path):
    sd = dict(meta_model.state_dict())
    del sd["sam_mask_decoder.conv_s1.bias"]
    with pytest.raises(CheckpointMismatchError, match=r"mask_decoder\.conv_s1\.bias") as err:
        load_sam2(_meta_pt(tmp_path, sd), target="image", config=hf_image_config())
    assert err.value.missing == ["mask_decoder.conv_s1.bias"] and not err.value.unexpected


def test_extra_key_is_named(meta_model, tmp_path):
    sd = dict(meta_model.state_dict())
    sd["sam_mask_decoder.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError, match=r"sam_mask_decoder\.extra_head\.weight") as err:
        load_sam2_from_meta(_meta_pt(tmp_path, sd), target="video", config=hf_video_config())
    assert err.value.unexpected == ["sam_mask_decoder.extra_head.weight"]


def test_video_only_keys_are_listed_not_filtered(meta_model):
    """For the image model exactly the memory / object-pointer keys are left out: every other key
    lands in Sam2Model, and the video model receives all of them."""
    sd = meta_model.state_dict()
    image_sd, video_sd = convert_sam2_state_dict(sd, "image"), convert_sam2_state_dict(sd, "video")
    left_out = set(video_sd) - set(image_sd)
    assert {k.split(".")[0] for k in left_out} == {
        "memory_attention", "memory_encoder", "mask_downsample", "object_pointer_proj",
        "temporal_positional_encoding_projection_layer", "no_memory_positional_encoding",
        "memory_temporal_positional_encoding", "no_object_pointer", "occlusion_spatial_embedding_parameter",
    }
    # 4 point embeddings -> 1 stacked; the Fourier matrix is duplicated for the image-wide PE
    assert len(video_sd) == len(sd) - 3 + 1


def test_shape_mismatch_is_named(meta_model):
    sd = dict(meta_model.state_dict())
    sd["no_mem_embed"] = torch.zeros(1, 1, 8)
    with pytest.raises(CheckpointMismatchError, match=r"no_memory_embedding \(1, 1, 8\) vs target \(1, 1, 256\)"):
        load_sam2_from_meta(sd, target="image", config=hf_image_config())


# --- published configs -----------------------------------------------------------------------

PUBLISHED = [
    ("sam2.1/sam2.1_hiera_t", "tiny", "2.1"),
    ("sam2/sam2_hiera_s", "small", "2.0"),
    ("sam2.1/sam2.1_hiera_b+", "base_plus", "2.1"),
    ("sam2.1/sam2.1_hiera_l", "large", "2.1"),
]


@pytest.mark.slow
@pytest.mark.parametrize("yaml_name,size,version", PUBLISHED, ids=[p[1] for p in PUBLISHED])
def test_published_configs_match_meta_yaml(yaml_name, size, version):
    """Meta's own yaml (built with random weights) converts onto sam2[_video]_config_for(size) with
    every key and shape matching; the HF models are built on the meta device (shapes only)."""
    from sam2.build_sam import build_sam2

    meta_sd = build_sam2(f"configs/{yaml_name}.yaml", ckpt_path=None, device="cpu", mode="eval").state_dict()
    assert infer_sam2_variant(meta_sd) == (size, version)
    with torch.device("meta"):
        video = Sam2VideoModel(sam2_video_config_for(size, version))
        image = Sam2Model(sam2_config_for(size, version))
    check_state_dict(convert_sam2_state_dict(meta_sd, "video"), video.state_dict(), source=yaml_name)
    check_state_dict(convert_sam2_state_dict(meta_sd, "image"), image.state_dict(), source=yaml_name)


def test_large_image_model_builds():
    model = Sam2Model(sam2_config_for("large"))
    assert model.vision_encoder.backbone.config.blocks_per_stage == [2, 6, 36, 4]
    assert model.config.vision_config.backbone_channel_list == [1152, 576, 288, 144]


# --- CLI: .pt -> HF folder -> load ----------------------------------------------------------


def _load_cli(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "convert" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def test_cli_pt_to_hf_folder_roundtrip(meta_model, hf_image, hf_video, image, tmp_path):
    config_dir = tmp_path / "cfg"
    hf_video_config().save_pretrained(config_dir)
    out = tmp_path / "hf"
    _load_cli("sam2_to_hf").main([
        "--checkpoint", str(_meta_pt(tmp_path, meta_model.state_dict())),
        "--config", str(config_dir / "config.json"), "--out", str(out),
    ])
    from_folder_image = load_sam2(out, target="image")
    from_folder_video = load_sam2(out, target="video")
    assert type(from_folder_image) is Sam2Model and type(from_folder_video) is Sam2VideoModel
    points = dict(input_points=torch.tensor([[[[40.0, 50.0]]]]), input_labels=torch.tensor([[[1]]]))
    expected = hf_image(pixel_values=image, **points)
    actual = from_folder_image(pixel_values=image, **points)
    assert torch.equal(actual.pred_masks, expected.pred_masks) and torch.equal(actual.iou_scores, expected.iou_scores)
    for name, tensor in hf_video.state_dict().items():
        assert torch.equal(from_folder_video.state_dict()[name], tensor), name


def test_image_only_hf_folder(hf_image, tmp_path):
    hf_image.save_pretrained(tmp_path / "image")
    loaded = load_sam2(tmp_path / "image")
    assert type(loaded) is Sam2Model
    for name, tensor in hf_image.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="no memory weights"):
        load_sam2(tmp_path / "image", target="video")
