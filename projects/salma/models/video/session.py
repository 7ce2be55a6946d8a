"""A streamed SAM-2 video session: frames read when the tracker reaches them, and the memory window
that keeps only what SAM-2's memory attention will read again (memory flat in the video's length).
"""
from __future__ import annotations

import torch
from transformers import Sam2VideoConfig
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from .sam2_video import FrameSource

class LazyFrames:
    """``Sam2VideoInferenceSession.processed_frames`` that reads a frame when SAM-2 encodes it.

    transformers' session holds every frame's pixels (``dict(enumerate(video))``); it only needs
    ``len()`` (the video's length: object-pointer positions, the end of propagation) and
    ``[t]`` (the frame to encode, called once per frame: its features are cached while SAM-2
    works on it). Nothing is kept here.
    """

    def __init__(self, frames: FrameSource, *, dtype: torch.dtype) -> None:
        self.frames = frames
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, t: int) -> torch.Tensor:
        return torch.as_tensor(self.frames[t]).to(dtype=self.dtype)  # (3, S, S)


class StreamedSession(Sam2VideoInferenceSession):
    """A SAM-2 video session whose frames are read lazily (:class:`LazyFrames`).

    ``state_device`` holds the memory bank (the retained frames' memory features): the model's
    device, or the host (offload: only the working set, i.e. the current frame's features, lives
    on the accelerator; memory entries move to it when memory attention reads them).
    """

    def __init__(self, frames: FrameSource, *, inference_device: torch.device, state_device: torch.device,
                 dtype: torch.dtype) -> None:
        super().__init__(video=None, inference_device=inference_device, inference_state_device=state_device,
                         video_storage_device=torch.device("cpu"), dtype=dtype)
        self.processed_frames = LazyFrames(frames, dtype=dtype)
        self.cache.inference_state_device = inference_device  # the current frame's features: working set


class MemoryWindow:
    """Which tracked frames SAM-2 will still read, and the release of everything else.

    SAM-2 (transformers' ``Sam2VideoModel``, Meta's predictor alike) conditions frame t on

    * every conditioning frame (``max_cond_frame_num=-1``): their outputs are kept whole;
    * the memory features of the ``num_maskmem - 1`` tracked frames before t (after t when
      tracking backwards): ``maskmem_features`` / ``maskmem_pos_enc``;
    * the object pointers of the ``max_object_pointers_in_encoder - 1`` tracked frames before t
      (after, backwards).

    The backward pass starts at the first conditioning frame s and reads, near s, frames that the
    forward pass tracked (s+1, s+2, ...): those stay until the backward pass has moved past them.
    Everything else of a tracked frame is dropped once it is yielded: its low- and
    full-resolution masks, and, out of reach, its memory features and object pointer. The bank
    therefore holds at most ~2 x (max_object_pointers_in_encoder - 1) frames, whatever the
    video's length. ``tests/test_video_stream.py`` checks the result equals transformers' session
    that keeps everything.
    """

    def __init__(self, config: Sam2VideoConfig, *, n_frames: int, start: int) -> None:
        self.n_frames = n_frames
        self.start = start  # the first conditioning frame: both passes start there
        self.memory_reach = max(int(config.num_maskmem) - 1, 0)
        self.pointer_reach = max(min(int(config.max_object_pointers_in_encoder), n_frames) - 1, self.memory_reach)

    def read_later(self, frame: int, t: int | None, reverse: bool, reach: int) -> bool:
        """Will a frame tracked after ``t`` (None: before propagation) look ``reach`` frames back at ``frame``?"""
        if reverse:  # later: t-1, ..., 0, each reading up to `reach` frames after itself
            return t > 0 and frame <= t - 1 + reach
        first_forward = self.start + 1 if t is None else t + 1
        if first_forward < self.n_frames and frame >= first_forward - reach:
            return True
        return self.start > 0 and frame <= self.start - 1 + reach  # the backward pass, later

    def release(self, session: Sam2VideoInferenceSession, t: int | None, *, reverse: bool) -> None:
        """Drop what no later frame reads, after frame ``t`` was yielded; move the rest of the bank
        to ``session.inference_state_device`` (a no-op unless offloading)."""
        state = session.inference_state_device
        for obj_idx, outputs in session.output_dict_per_obj.items():
            tracked = outputs["non_cond_frame_outputs"]
            for frame in list(tracked):
                out = tracked[frame]
                if not self.read_later(frame, t, reverse, self.pointer_reach):
                    del tracked[frame]
                    session.frames_tracked_per_obj[obj_idx].pop(frame, None)
                    continue
                for key in ("pred_masks", "high_res_masks"):  # read by nothing after the frame is yielded
                    out.pop(key, None)
                if not self.read_later(frame, t, reverse, self.memory_reach):
                    out.pop("maskmem_features", None)
                    out.pop("maskmem_pos_enc", None)
                _to_device(out, state)
            for out in outputs["cond_frame_outputs"].values():  # pred_masks stay: a revisited prompt reuses them
                out.pop("high_res_masks", None)
                _to_device(out, state)


def _to_device(out: dict, device: torch.device) -> None:
    """Memory features of one stored frame output to ``device`` (object pointers stay: they are small)."""
    for key in ("maskmem_features", "maskmem_pos_enc"):
        if key in out and out[key].device != device:
            out[key] = out[key].to(device, non_blocking=True)
