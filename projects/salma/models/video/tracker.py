"""Video inference: the LLM sees K frames, SAM-2's memory carries the masks to every frame.

For one video and its expressions (one generation prompt each, the K LLM frames as one InternVL
tile per frame):

1. ``model.predict`` generates every answer and decodes each generated ``[SEG]`` on the K LLM
   frames exactly as in training: SAM-2 features, the structure-prior pre-pass, CMA gated by the
   prior, the decoder with the ``[SEG]`` embedding appended to the sparse prompts.
2. ``propagation='memory'`` (default): :class:`SAM2MemoryTracker` runs transformers'
   ``Sam2VideoModel`` on *all* frames. The K decoded masks enter as SAM-2 mask inputs on their
   frames (conditioning frames: mask as output, memory encoded from it, object pointer from the
   decoder's mask-prompt pass), then SAM-2's memory attention + object pointers track every
   object through the other frames, forwards and, when the first LLM frame is not frame 0,
   backwards. This is Sa2VA's inference (language-prompted conditioning frames, memory-tracked
   rest). On the K conditioning frames the output is the language decode itself (or SAM-2's
   rendering of it: ``llm_frame_masks='tracker'``, Sa2VA-i's choice); on tracked frames the
   decoder sees memory-conditioned features and no language, so CMA and the prior (which exist
   only for language-conditioned decodes, as in training) are not applied there.
3. ``propagation='decode_all'`` (ablation, Sa2VA's "no memory" variant): every frame is decoded
   independently with the same ``[SEG]`` embedding (CMA + prior on every frame), no memory,
   ``decode_chunk`` frames per call.

Streamed, so a video of any length costs the memory of a few frames: frames are read when the
tracker reaches them (any sequence of SAM-2 inputs, e.g. ``datasets.frames.SamFrames``), encoded
and released; the session keeps only what SAM-2's memory attention will read again
(:class:`MemoryWindow`); masks leave frame by frame (:meth:`VideoPredictor.stream`).

The tracker shares the grounding runner's image encoder, prompt encoder and (fine-tuned) mask
decoder by reference (``tracker_decoder='shared'``); ``'original'`` keeps the SAM-2 checkpoint's
own prompt encoder and decoder for tracking (Sa2VA-i's choice: the fine-tuned decoder never saw
memory-conditioned features). The video-only modules (memory encoder, memory attention, object
pointer projection, temporal encodings) come from the Meta SAM-2 checkpoint, or are random for
tiny test models (``memory_weights='random'``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from transformers import Sam2VideoConfig, Sam2VideoModel
from transformers.models.sam2_video.configuration_sam2_video import (
    Sam2VideoMaskDecoderConfig,
    Sam2VideoPromptEncoderConfig,
)
from transformers.models.sam2_video.modeling_sam2_video import (
    Sam2VideoImageSegmentationOutput,
    Sam2VideoInferenceSession,
)

from .grounding import SAM2GroundingRunner
from .llava_sam2 import FrameCache

FrameSource = Union[torch.Tensor, Sequence[torch.Tensor]]  # (N, 3, S, S), or N lazily read (3, S, S)
PROPAGATION_MODES = ("memory", "decode_all")
TRACKER_DECODERS = ("shared", "original")
RANDOM_MEMORY = "random"


def video_config_from_image(runner: SAM2GroundingRunner) -> Sam2VideoConfig:
    """A ``Sam2VideoConfig`` whose image part equals the runner's SAM-2 and whose memory modules
    have the image model's width (Meta's video modules are 256 wide because SAM-2's FPN is)."""
    config = runner.sam2.config
    width = config.vision_config.fpn_hidden_size
    lowest = [int(s) for s in config.vision_config.backbone_feature_sizes[-1]]
    return Sam2VideoConfig(
        vision_config=config.vision_config,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(**config.prompt_encoder_config.to_dict()),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(**config.mask_decoder_config.to_dict()),
        image_size=runner.image_size,
        memory_attention_rope_feat_sizes=lowest,
        memory_attention_hidden_size=width,
        memory_encoder_hidden_size=width,
        mask_downsampler_embed_dim=width,
        memory_fuser_embed_dim=width,
    )


class MetaMaskPromptSam2VideoModel(Sam2VideoModel):
    """``Sam2VideoModel`` whose mask-prompted (conditioning) frames compute what Meta's
    ``SAM2VideoPredictor.add_new_mask`` + ``propagate_in_video`` compute.

    transformers 5.17's ``_use_mask_as_output`` differs from Meta's predictor in two places, and
    every tracked frame inherits the difference through memory attention and object pointers
    (up to 1.8e-2 in mask logits on a small random model: ``tests/test_video_meta_parity.py``):

    1. the object pointer: Meta decodes the mask prompt single-mask (``multimask_output=False``,
       mask token 0); transformers calls ``_single_frame_forward`` with its default
       ``multimask_output=True`` (the best of tokens 1-3 by predicted IoU);
    2. the memory: Meta's predictor encodes a prompted frame's memory from its low-resolution
       output upsampled to the input size (``propagate_in_video_preflight``), transformers from
       the full-resolution prompt (their binarised masks differ along the object's boundary).
    """

    @classmethod
    def adopt(cls, video: Sam2VideoModel) -> "MetaMaskPromptSam2VideoModel":
        """The same module (same tensors, same config) with this class's mask-prompt step."""
        if not isinstance(video, Sam2VideoModel):
            raise TypeError(f"expected a Sam2VideoModel, got {type(video).__name__}")
        video.__class__ = cls  # only a method differs: no state to add
        return video

    def _use_mask_as_output(
        self,
        backbone_features: torch.Tensor,
        high_res_features: list[torch.Tensor],
        mask_inputs: torch.Tensor,
    ) -> Sam2VideoImageSegmentationOutput:
        """backbone_features (B, C, h, w); mask_inputs (B, 1, S, S) {0, 1} -> the prompt as output."""
        out_scale, out_bias = 20.0, -10.0  # logits -10 / +10 for background / object
        dtype = backbone_features.dtype
        masks = mask_inputs.to(dtype)
        prompt_logits = masks * out_scale + out_bias  # (B, 1, S, S)
        low_res = F.interpolate(prompt_logits.float(), size=self.prompt_encoder.mask_input_size, mode="bilinear",
                                align_corners=False, antialias=True).to(dtype)  # (B, 1, S/4, S/4)
        object_pointer = self._single_frame_forward(
            input_masks=self.mask_downsample(masks),
            image_embeddings=high_res_features + [backbone_features],
            multimask_output=False,
        ).object_pointer  # (B, C)
        appearing = torch.any(mask_inputs.flatten(1) > 0, dim=1)[:, None].to(dtype)  # (B, 1)
        object_pointer = appearing * object_pointer + (1 - appearing) * self.no_object_pointer
        for_memory = F.interpolate(low_res.float(), size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False).to(dtype)  # what the memory encoder reads
        return Sam2VideoImageSegmentationOutput(
            iou_scores=mask_inputs.new_ones(mask_inputs.shape[0], 1).to(dtype),
            pred_masks=low_res,
            high_res_masks=for_memory,
            object_pointer=object_pointer,
            object_score_logits=(out_scale * appearing + out_bias).unsqueeze(-1),
            image_embeddings=high_res_features + [backbone_features],
        )


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
            from .convert.sam2 import load_sam2

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


LLM_FRAME_MASKS = ("language", "tracker")


@dataclass
class VideoStream:
    """One video's answers now, its masks frame by frame as SAM-2 produces them.

    ``answers``: per row (expression) ``text``, ``n_seg`` (``[SEG]`` in the answer), ``n_masks``
    (how many of them get masks: all, or the first only) and ``meta``. Iterating yields
    ``(frame index, masks)`` for every frame once, ``masks`` a list over rows of bool
    (n_masks, H, W) tensors on the CPU. Frames come in propagation order: from the first LLM
    frame to the end, then backwards to frame 0 (``'memory'``), or in order (``'decode_all'``,
    or no ``[SEG]`` at all). Nothing of earlier frames is kept: memory does not grow with the
    video's length.
    """

    answers: list[dict]
    n_frames: int
    size: tuple[int, int]
    frames: Iterator[tuple[int, list[torch.Tensor]]]

    def __iter__(self) -> Iterator[tuple[int, list[torch.Tensor]]]:
        return self.frames

    def collect(self) -> list[torch.Tensor]:
        """Every row's masks on every frame: bool (n_masks, N, H, W) per row (short videos)."""
        out = [torch.zeros(a["n_masks"], self.n_frames, *self.size, dtype=torch.bool) for a in self.answers]
        for t, masks in self:
            for row, m in enumerate(masks):
                out[row][:, t] = m
        return out


class VideoPredictor:
    """Answers and masks on every frame for the expressions of one video.

    Args:
        model: the SALMA model (``VideoLLaVASAMModel``), in eval mode.
        propagation: ``'memory'`` (default) or ``'decode_all'`` (see the module docstring).
        tracker: required for ``'memory'``.
        max_new_tokens: generation budget per answer.
        track_all_seg: give every ``[SEG]`` of an answer its masks (the inference API); by default
            only the first (the evaluation: one object per expression).
        progress: show a progress bar over the frames.
        llm_frame_masks: ``'memory'`` only: what an LLM frame's mask is: ``'language'`` (default)
            its language decode (CMA + prior), which is also what conditions SAM-2 there;
            ``'tracker'`` SAM-2's output on it (its rendering of that decode as a mask prompt,
            Sa2VA-i's choice: every frame's mask comes from the tracker).
        decode_chunk: ``'decode_all'`` only: frames encoded and decoded per call (memory).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        propagation: str = "memory",
        tracker: SAM2MemoryTracker | None = None,
        max_new_tokens: int = 32,
        track_all_seg: bool = False,
        progress: bool = False,
        llm_frame_masks: str = "language",
        decode_chunk: int = 16,
    ) -> None:
        if propagation not in PROPAGATION_MODES:
            raise ValueError(f"propagation must be one of {PROPAGATION_MODES}, got {propagation!r}")
        if propagation == "memory" and tracker is None:
            raise ValueError("propagation='memory' needs a SAM2MemoryTracker")
        if llm_frame_masks not in LLM_FRAME_MASKS:
            raise ValueError(f"llm_frame_masks must be one of {LLM_FRAME_MASKS}, got {llm_frame_masks!r}")
        if decode_chunk < 1:
            raise ValueError(f"decode_chunk must be >= 1, got {decode_chunk}")
        self.model = model
        self.propagation = propagation
        self.tracker = tracker
        self.max_new_tokens = max_new_tokens
        self.track_all_seg = track_all_seg
        self.progress = progress
        self.llm_frame_masks = llm_frame_masks
        self.decode_chunk = decode_chunk

    @torch.no_grad()
    def __call__(
        self,
        batch: dict,
        frames: FrameSource,
        llm_frame_indices: Sequence[int],
        out_size: tuple[int, int],
    ) -> list[dict]:
        """Predict every row of ``batch`` (one expression per row, all of one video), the masks of
        every frame in memory (short videos; :meth:`stream` for any length).

        Returns:
            per row: ``text``, ``n_seg``, ``masks`` bool (1, N, H, W) on every frame, or
            (0, N, H, W) when the answer has no ``[SEG]``, and ``meta``; with ``track_all_seg``
            masks are (n_seg, N, H, W).
        """
        stream = self.stream(batch, frames, llm_frame_indices, out_size)
        masks = stream.collect()
        return [{"text": a["text"], "n_seg": a["n_seg"], "masks": m, "meta": a["meta"]}
                for a, m in zip(stream.answers, masks)]

    @torch.no_grad()
    def stream(
        self,
        batch: dict,
        frames: FrameSource,
        llm_frame_indices: Sequence[int],
        out_size: tuple[int, int],
    ) -> VideoStream:
        """Generate every row's answer now; masks follow frame by frame (:class:`VideoStream`).

        The answer's first ``[SEG]`` is the expression's object (as in the RES evaluation);
        further ``[SEG]`` tokens are counted in ``n_seg`` but not tracked (unless ``track_all_seg``).

        Args:
            batch: collated rows whose ``g_pixel_values`` are the K LLM frames (K, 3, S, S).
            frames: SAM-2 input of every frame of the video: (N, 3, S, S), or a sequence that
                reads a frame when asked (``datasets.frames.SamFrames``).
            llm_frame_indices: (K,) index in the video of each LLM frame (repeats allowed).
            out_size: the video's (H, W).
        """
        n_frames = len(frames)
        if self.propagation == "decode_all":
            rows = len(batch["g_pixel_values"])
            outputs = self.model.predict(dict(batch, g_pixel_values=[None] * rows), self.max_new_tokens,
                                         keep_queries=True)
            answers = self._answers(outputs)
            return VideoStream(answers, n_frames, tuple(out_size),
                               self._progress(self._decode_all(outputs, answers, frames, out_size), n_frames))

        outputs = self.model.predict(batch, self.max_new_tokens)  # masks on the K LLM frames
        answers = self._answers(outputs)
        first = {}  # video frame -> position among the LLM frames (a repeated frame: its first copy)
        for k, t in enumerate(llm_frame_indices):
            first.setdefault(int(t), k)
        objects = [(row, s) for row, a in enumerate(answers) for s in range(a["n_masks"])]  # (row, [SEG])
        if not objects:
            frames_out = ((t, [torch.zeros(0, *out_size, dtype=torch.bool) for _ in answers]) for t in range(n_frames))
            return VideoStream(answers, n_frames, tuple(out_size), self._progress(frames_out, n_frames))
        cond = {t: torch.stack([outputs[row]["mask_logits"][s, k] for row, s in objects]) for t, k in first.items()}
        language = {t: torch.stack([outputs[row]["masks"][s, k] for row, s in objects]) for t, k in first.items()}
        owners = [[i for i, (r, _) in enumerate(objects) if r == row] for row in range(len(answers))]

        def tracked() -> Iterator[tuple[int, list[torch.Tensor]]]:
            for t, logits in self.tracker.propagate(frames, cond):  # logits (n_obj, 1, h, w)
                if self.llm_frame_masks == "language" and t in language:
                    masks = language[t]  # the LLM frames keep the language decode itself
                else:
                    masks = self.tracker.to_masks(logits, out_size)  # (n_obj, H, W)
                yield t, [masks[mine] for mine in owners]

        return VideoStream(answers, n_frames, tuple(out_size), self._progress(tracked(), n_frames))

    def _answers(self, outputs: list[dict]) -> list[dict]:
        """Per row: text, n_seg, n_masks (the [SEG] that get masks), meta."""
        answers = []
        for o in outputs:
            if "masks" in o:
                n_seg = int(o["masks"].shape[0])
            else:  # decode_all: the queries only, masks come later
                n_seg = 0 if o["queries"] is None else int(o["queries"].seg.shape[0])
            n_masks = n_seg if self.track_all_seg else min(n_seg, 1)
            answers.append({"text": o["text"], "n_seg": n_seg, "n_masks": n_masks, "meta": o["meta"]})
        return answers

    def _decode_all(self, outputs, answers, frames: FrameSource, out_size) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """Every frame decoded with each answer's [SEG] embeddings, ``decode_chunk`` frames per call
        (their SAM-2 features and prior computed once for all rows)."""
        sam2 = next(self.model.grounding_encoder.parameters())
        for start in range(0, len(frames), self.decode_chunk):
            chunk = range(start, min(start + self.decode_chunk, len(frames)))
            pixels = torch.stack([torch.as_tensor(frames[t]) for t in chunk])  # (C, 3, S, S)
            pixels = pixels.to(sam2.device, sam2.dtype)
            cache = FrameCache()
            decoded = [self.model.decode_frames(o["queries"], pixels, tuple(out_size), cache)["masks"][: a["n_masks"]]
                       for o, a in zip(outputs, answers)]  # per row (n_masks, C, H, W)
            for i, t in enumerate(chunk):
                yield t, [m[:, i] for m in decoded]

    def _progress(self, frames: Iterator, n_frames: int) -> Iterator:
        if not self.progress:
            return frames

        def counted():
            with tqdm(total=n_frames, desc="masks", unit="frame") as bar:
                for item in frames:
                    yield item
                    bar.update()
        return counted()
