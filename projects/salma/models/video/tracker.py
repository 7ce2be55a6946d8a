"""SAM-2's memory tracker around the grounding runner's modules (shared by reference, never copied):
the K language-decoded masks condition SAM-2, its memory carries them to every frame.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from transformers import Sam2VideoModel

from ..convert.sam2 import load_sam2
from ..grounding import SAM2GroundingRunner
from .sam2_video import (RANDOM_MEMORY, TRACKER_DECODERS, FrameSource, MetaMaskPromptSam2VideoModel,
                         video_config_from_image)
from .session import MemoryWindow, StreamedSession

class SAM2MemoryTracker(nn.Module):
    """SAM-2's memory machinery around the grounding runner's modules.

    Args:
        runner: the model's ``SAM2GroundingRunner`` (its modules are shared, never copied).
        memory_weights: Meta SAM-2 ``.pt`` or HF ``sam2_video`` folder holding the memory
            modules, ``'random'`` (tiny test models only: seeded random memory modules), or a
            built ``Sam2VideoModel`` whose memory weights the caller loads (an exported model).
        tracker_decoder: ``'shared'`` tracks with the runner's (fine-tuned) prompt encoder and
            mask decoder; ``'original'`` with the checkpoint's (needs a checkpoint).
        seed: seed of the random memory modules.
        offload: keep the memory bank (the retained frames' memory features) on the host; only
            the frame being tracked lives on the accelerator. Frames always stream from the host.
            Off by default: the bank is bounded (:class:`MemoryWindow`), a few MB per object.
    """

    def __init__(
        self,
        runner: SAM2GroundingRunner,
        *,
        memory_weights: str | Sam2VideoModel,
        tracker_decoder: str = "shared",
        seed: int = 0,
        offload: bool = False,
    ) -> None:
        super().__init__()
        if tracker_decoder not in TRACKER_DECODERS:
            raise ValueError(f"tracker_decoder must be one of {TRACKER_DECODERS}, got {tracker_decoder!r}")
        if isinstance(memory_weights, Sam2VideoModel):
            video = memory_weights
        elif memory_weights == RANDOM_MEMORY:
            if tracker_decoder == "original":
                raise ValueError("tracker_decoder='original' needs a SAM-2 checkpoint, not memory_weights='random'")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                video = Sam2VideoModel(video_config_from_image(runner))
        else:
            video = load_sam2(memory_weights, target="video", image_size=runner.image_size)
        image_state = runner.sam2.state_dict(keep_vars=True)
        if tracker_decoder == "original":  # only the (frozen) image encoder is shared
            image_state = {k: v for k, v in image_state.items() if k.startswith("vision_encoder.")}
        # assign=True makes the video model hold the runner's Parameter objects: one copy of the
        # weights, and a fine-tuned decoder loaded into the runner is what tracking uses.
        result = video.load_state_dict(image_state, strict=False, assign=True)
        if result.unexpected_keys:
            raise RuntimeError(
                f"SAM-2 image weights without a place in Sam2VideoModel: {sorted(result.unexpected_keys)[:10]}"
            )
        self.shared_keys = frozenset(image_state)  # Sam2VideoModel keys that hold the runner's tensors
        video = MetaMaskPromptSam2VideoModel.adopt(video)
        video.requires_grad_(False)
        self.video = video.eval().to(device=self._device_of(runner), dtype=self._dtype_of(runner))
        self.image_size = runner.image_size
        self.offload = offload

    def own_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors that are the tracker's own, not the runner's: the memory modules (and, with
        ``tracker_decoder='original'``, the checkpoint's prompt encoder and decoder). An exported
        model saves these next to the runner's weights."""
        return {k: v for k, v in self.video.state_dict().items() if k not in self.shared_keys}

    @staticmethod
    def _device_of(runner: nn.Module) -> torch.device:
        return next(runner.parameters()).device

    @staticmethod
    def _dtype_of(runner: nn.Module) -> torch.dtype:
        return next(runner.parameters()).dtype

    @torch.no_grad()
    def track(
        self,
        frames: FrameSource,
        cond_masks: dict[int, torch.Tensor],
        out_size: tuple[int, int],
        progress: bool = False,
    ) -> torch.Tensor:
        """Track n objects through N frames from masks given on some frames (the whole result in
        memory: short videos; :meth:`propagate` streams).

        Args:
            frames: SAM-2 input of every frame: a (N, 3, S, S) tensor, or any sequence of N
                (3, S, S) tensors (``len`` and ``frames[t]``) that reads a frame when asked
                (``datasets.frames.SamFrames``); frames move to the model's device one at a time.
            cond_masks: {frame index: (n, h, w) mask logits or booleans} of the conditioning
                frames (any resolution; resized to S x S and thresholded at 0).
            out_size: (H, W) of the returned masks.
            progress: show a progress bar over the tracked frames.
        Returns:
            bool (n, N, H, W); conditioning frames hold SAM-2's version of the given masks.
        """
        n_frames = len(frames)
        masks = None
        bar = tqdm(total=n_frames, desc="SAM-2 propagation", unit="frame", disable=not progress)
        for t, logits in self.propagate(frames, cond_masks):  # logits (n, 1, h, w)
            if masks is None:
                masks = torch.empty(logits.shape[0], n_frames, *out_size, dtype=torch.bool)
            masks[:, t] = self.to_masks(logits, out_size)
            bar.update()
        bar.close()
        return masks

    @staticmethod
    def to_masks(logits: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """(n, 1, h, w) low-resolution logits -> bool (n, H, W) on the CPU (bilinear, then > 0)."""
        resized = F.interpolate(logits.float(), size=out_size, mode="bilinear", align_corners=False)
        return (resized[:, 0] > 0).cpu()

    @torch.no_grad()
    def propagate(
        self, frames: FrameSource, cond_masks: dict[int, torch.Tensor]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """SAM-2's low-resolution mask logits of every frame, each frame once: forwards from the
        first conditioning frame to the end, then backwards from it to frame 0 (Meta's
        ``SAM2VideoPredictor.propagate_in_video`` order).

        Streamed: a frame is read (``frames[t]``) when the tracker reaches it, encoded, and
        released; the session keeps only what memory attention will still read
        (:class:`MemoryWindow`), so memory does not grow with the video's length. Every frame is
        read once, the conditioning frames first.

        Args: ``frames`` and ``cond_masks`` as in :meth:`track`.
        Yields:
            (frame index, (n, 1, h, w) mask logits at SAM-2's low resolution, on the model's device).
        """
        if not cond_masks:
            raise ValueError("tracking needs at least one conditioning frame")
        n_frames = len(frames)
        cond_frames = sorted(cond_masks)
        if cond_frames[0] < 0 or cond_frames[-1] >= n_frames:
            raise ValueError(f"conditioning frames {cond_frames} outside the video's {n_frames} frames")
        n_obj = {int(m.shape[0]) for m in cond_masks.values()}
        if len(n_obj) != 1:
            raise ValueError(f"every conditioning frame needs the same objects, got counts {sorted(n_obj)}")
        n_obj = n_obj.pop()
        session = self._session(frames)
        for t in cond_frames:
            masks = self._as_mask_input(cond_masks[t])  # (n, 1, S, S) {0, 1}
            for obj in range(n_obj):
                session.add_mask_inputs(session.obj_id_to_idx(obj), t, masks[obj : obj + 1])
        for t in cond_frames:  # register each conditioning frame (mask as output + memory)
            session.obj_with_new_inputs = list(range(n_obj))
            self.video(session, frame_idx=t)
        window = MemoryWindow(self.video.config, n_frames=n_frames, start=cond_frames[0])
        window.release(session, None, reverse=False)

        done = set()
        for reverse in (False, True):
            if reverse and cond_frames[0] == 0:
                break
            for out in self.video.propagate_in_video_iterator(session, start_frame_idx=cond_frames[0], reverse=reverse):
                t = out.frame_idx
                if t not in done:  # the first conditioning frame starts both passes
                    done.add(t)
                    yield t, out.pred_masks
                window.release(session, t, reverse=reverse)
        missing = [t for t in range(n_frames) if t not in done]
        if missing:
            raise RuntimeError(f"SAM-2 propagation left frames {missing[:10]} without a mask")

    def _session(self, frames: FrameSource) -> StreamedSession:
        device, dtype = self._device_of(self.video), self._dtype_of(self.video)
        return StreamedSession(frames, inference_device=device, dtype=dtype,
                               state_device=torch.device("cpu") if self.offload else device)

    def _as_mask_input(self, masks: torch.Tensor) -> torch.Tensor:
        """(n, h, w) logits or booleans -> (n, 1, S, S) float {0, 1} at SAM-2's input size."""
        logits = masks.float() if masks.dtype != torch.bool else masks.float() * 2 - 1
        resized = F.interpolate(logits[:, None], size=(self.image_size, self.image_size), mode="bilinear",
                                align_corners=False)
        return (resized > 0).float()
