"""Streamed SAM-2 propagation: frames read when the tracker reaches them and released, a memory bank
bounded by SAM-2's reach, and the result of transformers' session that keeps every frame and
every output, bit for bit.

The reference is the propagation as it ran before streaming (written out here from transformers'
API): ``Sam2VideoInferenceSession(video=<all frames>)``, the mask prompts registered, then
``propagate_in_video_iterator`` forwards from the first conditioning frame and backwards to
frame 0. Conditioning frames in the middle make both passes run, and the video is longer than
SAM-2's reach, so frames really leave the bank (also with the default 7 memories / 16 pointers).
"""
from __future__ import annotations

import weakref

import pytest
import torch
from mmengine.config import Config
from transformers import Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from projects.salma.models.video import SAM2MemoryTracker, video_config_from_image
from projects.salma.registry import MODELS

TINY = "configs/tiny/salma_tiny.py"
S = 128  # the tiny SAM-2's input size


@pytest.fixture(scope="module")
def runner():
    torch.manual_seed(0)
    return MODELS.build(Config.fromfile(TINY).model.grounding_encoder).eval()


def make_tracker(runner, num_maskmem: int, max_pointers: int) -> SAM2MemoryTracker:
    torch.manual_seed(1)
    config = video_config_from_image(runner)
    config.num_maskmem, config.max_object_pointers_in_encoder = num_maskmem, max_pointers
    return SAM2MemoryTracker(runner, memory_weights=Sam2VideoModel(config))


def moving_video(n_frames: int) -> torch.Tensor:
    """(N, 3, S, S): a random texture sliding right, plus noise (SAM-2 input, normalised)."""
    gen = torch.Generator().manual_seed(2)
    texture = torch.randn(3, S, S, generator=gen)
    return torch.stack([torch.roll(texture, shifts=3 * t, dims=2) + 0.3 * torch.randn(texture.shape, generator=gen)
                        for t in range(n_frames)])


def prompts(cond_frames) -> dict[int, torch.Tensor]:
    """Two objects' masks (32 x 32 logits-resolution booleans) on each conditioning frame."""
    out = {}
    for k, t in enumerate(cond_frames):
        m = torch.zeros(2, 32, 32, dtype=torch.bool)
        m[0, 6 + k : 20 + k, 8:24] = True
        m[1, 18:30, 2 + 2 * k : 12 + 2 * k] = True
        out[t] = m
    return out


def all_in_memory(tracker: SAM2MemoryTracker, frames: torch.Tensor, cond: dict
                  ) -> tuple[dict, Sam2VideoInferenceSession]:
    """The propagation before streaming: every frame in the session, every output kept."""
    session = Sam2VideoInferenceSession(video=frames, video_height=S, video_width=S, inference_device="cpu",
                                        inference_state_device="cpu", video_storage_device="cpu", dtype=torch.float32)
    starts = sorted(cond)
    for t in starts:
        masks = tracker._as_mask_input(cond[t])
        for obj in range(len(masks)):
            session.add_mask_inputs(session.obj_id_to_idx(obj), t, masks[obj : obj + 1])
    for t in starts:
        session.obj_with_new_inputs = list(range(len(cond[t])))
        tracker.video(session, frame_idx=t)
    logits = {}
    for reverse in (False, True):
        for out in tracker.video.propagate_in_video_iterator(session, start_frame_idx=starts[0], reverse=reverse):
            logits.setdefault(out.frame_idx, out.pred_masks.clone())
    return logits, session


class CountingFrames:
    """SAM-2 input read on demand: counts the reads and keeps a weak reference to each frame given."""

    def __init__(self, frames: torch.Tensor) -> None:
        self.frames = frames
        self.reads: list[int] = []
        self.given: list[weakref.ref] = []

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, t: int) -> torch.Tensor:
        self.reads.append(t)
        frame = self.frames[t].clone()  # a new tensor, as a decoder would produce
        self.given.append(weakref.ref(frame))
        return frame

    def alive(self) -> int:
        return sum(ref() is not None for ref in self.given)


@pytest.mark.parametrize("num_maskmem, max_pointers, n_frames, cond_frames", [
    (7, 16, 48, (14, 22)),  # SAM-2's defaults
    (3, 4, 30, (10, 17)),  # short reach: most of the video leaves the bank
])
def test_streamed_propagation_equals_the_all_in_memory_session(runner, monkeypatch, num_maskmem, max_pointers,
                                                               n_frames, cond_frames):
    tracker = make_tracker(runner, num_maskmem, max_pointers)
    frames, cond = moving_video(n_frames), prompts(cond_frames)
    expected, full_session = all_in_memory(tracker, frames, cond)

    sessions = []
    new_session = tracker._session
    monkeypatch.setattr(tracker, "_session", lambda f: sessions.append(new_session(f)) or sessions[-1])
    source = CountingFrames(frames)
    order, bank, with_memory, alive = [], [], [], []
    for t, logits in tracker.propagate(source, cond):
        order.append(t)
        assert torch.equal(logits, expected[t]), f"frame {t}: max diff {(logits - expected[t]).abs().max():.3e}"
        stored = [sessions[0].output_dict_per_obj[obj]["non_cond_frame_outputs"] for obj in (0, 1)]
        bank.append(len(stored[0]))
        with_memory.append(sum("maskmem_features" in out for out in stored[0].values()))
        alive.append(source.alive())

    first = cond_frames[0]
    assert order == list(range(first, n_frames)) + list(range(first - 1, -1, -1))  # forwards, then backwards
    # each frame read once, when the tracker reaches it (the conditioning frames first)
    assert source.reads == [*cond_frames] + [t for t in order if t not in cond_frames]
    assert max(alive) <= 1  # a frame's pixels are released once it is encoded
    pointer_reach, memory_reach = max_pointers - 1, num_maskmem - 1
    assert max(bank) <= 2 * pointer_reach and max(with_memory) <= 2 * memory_reach, (bank, with_memory)
    assert max(bank) < n_frames - len(cond_frames) - 5  # frames did leave the bank
    assert sessions[0].output_dict_per_obj[0]["non_cond_frame_outputs"] == {}  # all gone at the end
    assert len(full_session.output_dict_per_obj[0]["non_cond_frame_outputs"]) == n_frames - len(cond_frames)
    spread = torch.stack([expected[t] for t in range(n_frames)]).std()
    assert spread > 0.1  # the logits compared are not constant


def test_track_on_a_lazy_source_equals_track_on_the_tensor(runner):
    tracker = make_tracker(runner, 3, 4)
    frames, cond = moving_video(12), prompts((5,))
    lazy = tracker.track(CountingFrames(frames), cond, (40, 56))
    assert torch.equal(lazy, tracker.track(frames, cond, (40, 56)))
    assert lazy.shape == (2, 12, 40, 56) and lazy.any() and not lazy.all()
