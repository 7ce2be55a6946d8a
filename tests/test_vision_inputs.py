"""The LLM-side image inputs of each family against the family's own transformers processor.

Qwen-VL: ``Qwen2VLImageProcessorPil`` (transformers' PIL backend of the processor Qwen2.5-VL and
Qwen3-VL ship, configured as their ``preprocessor_config.json`` are), on images of several sizes and
aspect ratios: the same grid, the same patch rows, the same placeholder count. InternVL: the tiles
are what the existing InternVL tests pin (tests/test_data_masks_transforms.py); here the scheme's
token strings and counts.
"""
import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from projects.salma.constants import IMG_CONTEXT_TOKEN, QWEN_IMAGE_PAD, QWEN_VISION_END, QWEN_VISION_START
from projects.salma.datasets.vision_inputs import InternVLTiles, QwenVLPatches, build_vision_inputs, smart_resize

# preprocessor_config.json of the released models (the values that differ between them)
QWEN25_VL = dict(patch_size=14, image_mean="clip", image_std="clip")
QWEN3_VL = dict(patch_size=16, image_mean="half", image_std="half")
HF_STATS = {"clip": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
            "half": ([0.5] * 3, [0.5] * 3)}
SIZES = [(451, 300), (300, 451), (64, 64), (1000, 90), (333, 333)]


def random_image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def hf_processor(args, min_pixels, max_pixels):
    mean, std = HF_STATS[args["image_mean"]]
    return Qwen2VLImageProcessorPil(patch_size=args["patch_size"], merge_size=2, temporal_patch_size=2,
                                    image_mean=mean, image_std=std,
                                    size={"shortest_edge": min_pixels, "longest_edge": max_pixels})


@pytest.mark.parametrize("family", [QWEN25_VL, QWEN3_VL], ids=["qwen2.5-vl", "qwen3-vl"])
@pytest.mark.parametrize("size", SIZES)
def test_qwen_vl_image_inputs_equal_the_transformers_processor(family, size):
    min_pixels, max_pixels = 16 * 28 * 28, 128 * 28 * 28
    ours = QwenVLPatches(**family, min_pixels=min_pixels, max_pixels=max_pixels).image(random_image(*size))
    theirs = hf_processor(family, min_pixels, max_pixels)(images=[random_image(*size)], return_tensors="pt")
    assert torch.equal(ours.grid_thw, theirs["image_grid_thw"])
    assert ours.pixel_values.shape == theirs["pixel_values"].shape
    torch.testing.assert_close(ours.pixel_values, theirs["pixel_values"], atol=1e-5, rtol=0)
    n = int(theirs["image_grid_thw"].prod()) // 4
    assert ours.num_tokens == n
    assert ours.prefix == f"{QWEN_VISION_START}{QWEN_IMAGE_PAD * n}{QWEN_VISION_END}\n"


def test_qwen_vl_video_frames_are_images_under_the_video_bounds():
    scheme = QwenVLPatches(**QWEN25_VL, video_min_pixels=4 * 28 * 28, video_max_pixels=16 * 28 * 28)
    frames = [random_image(200, 120, seed=s) for s in range(3)]
    ours = scheme.video(frames)
    theirs = hf_processor(QWEN25_VL, 4 * 28 * 28, 16 * 28 * 28)(images=frames, return_tensors="pt")
    assert torch.equal(ours.grid_thw, theirs["image_grid_thw"]) and ours.grid_thw.shape == (3, 3)
    torch.testing.assert_close(ours.pixel_values, theirs["pixel_values"], atol=1e-5, rtol=0)
    per_frame = int(theirs["image_grid_thw"][0].prod()) // 4
    block = f"{QWEN_VISION_START}{QWEN_IMAGE_PAD * per_frame}{QWEN_VISION_END}\n"
    assert ours.prefix == "".join(f"Frame{i + 1}: {block}" for i in range(3)) and ours.num_tokens == 3 * per_frame


def test_smart_resize_cases_by_hand():
    assert smart_resize(300, 451, factor=28, min_pixels=0, max_pixels=10**9) == (308, 448)  # round to 28
    # over the budget: scaled by 1 / sqrt(300 * 451 / (16 * 28**2)) = 1 / 3.28: 91.3 x 137.3, floored to 28s
    assert smart_resize(300, 451, factor=28, min_pixels=0, max_pixels=16 * 28 * 28) == (84, 112)
    assert smart_resize(20, 20, factor=28, min_pixels=4 * 28 * 28, max_pixels=10**9) == (56, 56)  # ceil up
    with pytest.raises(ValueError, match="aspect ratio 201"):
        smart_resize(1, 201, factor=28, min_pixels=0, max_pixels=10**9)


def test_internvl_scheme_keeps_the_tiles_and_token_strings():
    scheme = build_vision_inputs(None, image_size=32, image_seq_length=4, max_dynamic_patch=6)
    assert isinstance(scheme, InternVLTiles)
    out = scheme.image(random_image(96, 32))  # a 3x1 grid + thumbnail
    assert out.pixel_values.shape == (4, 3, 32, 32) and out.grid_thw is None and out.num_tokens == 16
    assert out.prefix == f"<img>{IMG_CONTEXT_TOKEN * 16}</img>\n" and scheme.image_tokens(96, 32) == 16
    video = scheme.video([random_image(50, 40, seed=s) for s in range(2)])
    assert video.pixel_values.shape == (2, 3, 32, 32) and video.num_tokens == 8
    assert video.prefix == "".join(f"Frame{i}: <img>{IMG_CONTEXT_TOKEN * 4}</img>\n" for i in (1, 2))


def test_unknown_family_and_statistics_are_refused_by_name():
    with pytest.raises(ValueError, match="vision.family must be one of"):
        build_vision_inputs(dict(family="llava"))
    with pytest.raises(ValueError, match="image statistics must be"):
        QwenVLPatches(image_mean="imagenet")
