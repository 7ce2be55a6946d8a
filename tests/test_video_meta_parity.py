"""SAM-2 memory propagation end to end against Meta's own ``SAM2VideoPredictor``.

One small random Meta SAM-2 (``tests/tiny_meta_sam2.py``) is run two ways on the same frames:

* Meta: ``SAM2VideoPredictor`` with the settings ``build_sam2_video_predictor`` gives the
  sam2.1 configs (dynamic multimask via stability, binarised prompt masks in the memory encoder),
  except ``fill_hole_area=0`` (its CUDA extension is absent here) and the default
  ``non_overlap_masks=False`` (objects are tracked independently, as SALMA's tracker does);
  ``init_state`` / ``add_new_mask`` / ``propagate_in_video`` forwards then backwards.
* SALMA: the same weights converted by ``models/convert/sam2.py`` into the grounding runner's
  ``Sam2Model`` (an HF folder, as a real SAM-2 checkpoint is read) and the tracker's
  ``Sam2VideoModel``; ``SAM2MemoryTracker.propagate`` / ``track``.

A mask prompt per object on a middle frame; every frame's low-resolution mask logits must agree
within 1e-4, and the thresholded masks at the video size must be identical. This is the reference
any rewrite of the tracker (e.g. streaming) has to keep passing.

Needs Meta's ``sam2`` package (test-only, see requirements-test.txt); skipped without it.
"""
from __future__ import annotations

import pytest
import torch

sam2 = pytest.importorskip("sam2", reason="Meta's sam2 is a test-only extra: see requirements-test.txt")

import sam2.sam2_video_predictor as meta_video  # noqa: E402

from projects.salma.models.convert.sam2 import load_sam2_from_meta  # noqa: E402
from projects.salma.models.grounding import SAM2GroundingRunner  # noqa: E402
from projects.salma.models.video import SAM2MemoryTracker  # noqa: E402
from tiny_meta_sam2 import IMAGE_SIZE, hf_image_config, hf_video_config, meta_small_sam2  # noqa: E402

N_FRAMES, COND_FRAME = 9, 4  # the prompt in the middle: 4 frames tracked backwards, 4 forwards
VIDEO_SIZE = (96, 128)  # (H, W) of the "original" video: outputs are resized to it
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def meta_predictor():
    return meta_small_sam2(
        meta_video.SAM2VideoPredictor,
        binarize_mask_from_pts_for_mem_enc=True,  # build_sam2_video_predictor(apply_postprocessing=True)
        fill_hole_area=0,  # needs the CUDA extension
        non_overlap_masks=False,
    )


@pytest.fixture(scope="module")
def tracker(meta_predictor, tmp_path_factory):
    """SALMA's tracker on the same weights: the runner reads an HF SAM-2 folder, the memory modules
    come in as a converted ``Sam2VideoModel`` (an exported model's path)."""
    state = meta_predictor.state_dict()
    folder = tmp_path_factory.mktemp("sam2_image")
    load_sam2_from_meta(state, target="image", config=hf_image_config()).save_pretrained(folder)
    runner = SAM2GroundingRunner(sam2=dict(checkpoint=str(folder)), enable_cma=False, mask_source="none").eval()
    video = load_sam2_from_meta(state, target="video", config=hf_video_config())
    return SAM2MemoryTracker(runner, memory_weights=video)


@pytest.fixture(scope="module")
def video():
    """(N, 3, S, S) normalised SAM-2 input of a moving random texture, and a prompt mask per object
    on COND_FRAME at S x S (so neither side resizes the prompt)."""
    gen = torch.Generator().manual_seed(1)
    texture = torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    frames = torch.stack([torch.roll(texture, shifts=4 * t, dims=2) + 0.3 * torch.randn(texture.shape, generator=gen)
                          for t in range(N_FRAMES)])
    masks = torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
    masks[0, 30:80, 40:100] = True
    masks[1, 90:128, 0:30] = True  # touches the border
    return frames, masks


def meta_propagation(predictor, frames, masks, monkeypatch) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{frame: (low-res logits (n, 1, h, w), video-size logits (n, 1, H, W))} from Meta's predictor.

    ``init_state`` reads a JPEG folder or an mp4 through its own loader; the frames here are
    already SAM-2 input, so the loader is replaced by one that returns them (nothing else changes).
    """
    monkeypatch.setattr(meta_video, "load_video_frames", lambda **kwargs: (frames, *VIDEO_SIZE))
    state = predictor.init_state(video_path="in-memory frames")
    for obj, mask in enumerate(masks):
        predictor.add_new_mask(state, COND_FRAME, obj, mask)
    video_res = {}
    for reverse in (False, True):
        for t, _obj_ids, logits in predictor.propagate_in_video(state, reverse=reverse):
            video_res[t] = logits
    low_res = {}
    for t in range(N_FRAMES):
        per_obj = []
        for obj in range(len(masks)):
            outputs = state["output_dict_per_obj"][obj]
            out = outputs["cond_frame_outputs"].get(t) or outputs["non_cond_frame_outputs"][t]
            per_obj.append(out["pred_masks"])
        low_res[t] = (torch.cat(per_obj), video_res[t])
    return low_res


def test_memory_propagation_matches_meta_video_predictor(meta_predictor, tracker, video, monkeypatch):
    frames, masks = video
    expected = meta_propagation(meta_predictor, frames, masks, monkeypatch)

    order = []
    diffs = {}
    for t, logits in tracker.propagate(frames, {COND_FRAME: masks}):
        order.append(t)
        meta_low, meta_video_res = expected[t]
        assert logits.shape == meta_low.shape == (2, 1, IMAGE_SIZE // 4, IMAGE_SIZE // 4)
        diffs[t] = (logits.float() - meta_low).abs().max().item()
        # non-trivial masks on every frame, so the comparison is not between two empty outputs
        foreground = (meta_video_res > 0).flatten(1).float().mean(1)
        assert ((foreground > 0.01) & (foreground < 0.99)).all(), (t, foreground)
    assert order == [4, 5, 6, 7, 8, 3, 2, 1, 0]  # forwards from the prompt, then backwards
    report = ", ".join(f"frame {t}: {d:.2e}" for t, d in sorted(diffs.items()))
    print(f"max |SALMA - Meta| low-res mask logits per frame: {report}")
    assert max(diffs.values()) < TOLERANCE, report

    tracked = tracker.track(frames, {COND_FRAME: masks}, VIDEO_SIZE)  # (n, N, H, W) bool
    assert tracked.shape == (2, N_FRAMES, *VIDEO_SIZE)
    for t in range(N_FRAMES):
        meta_logits = expected[t][1][:, 0]  # (n, H, W)
        decided = meta_logits.abs() > TOLERANCE  # pixels whose sign a difference under 1e-4 cannot flip
        assert decided.float().mean() > 0.99
        assert torch.equal(tracked[:, t][decided], meta_logits[decided] > 0), t
