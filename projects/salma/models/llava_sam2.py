"""VideoLLaVASAMModel: the SALMA model that trains, predicts and is exported.

InternVL runs the conversation; the last hidden state at each ``[SEG]`` (and at the tokens of
that object's expression) is projected by ``text_hidden_fcs`` to SAM-2's prompt width; the SAM-2
runner decodes one mask per (object, frame) with CMA + structure prior. See docs/design.md, "Data
flow", for one training step.

Batch contract (``projects.salma.datasets.collate``): ``input_ids``, ``attention_mask``,
``labels``, ``expr_ids`` (B, L); ``pixel_values`` (N_tiles, 3, S, S) or None; per sample lists
``g_pixel_values`` (T, 3, G, G) | None, ``masks`` (n_obj, T, H, W) | None, ``prompt_masks``
(n_regions, g, g) | None (visual prompts, optional key) and ``meta`` dicts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch import nn

from ..constants import PHRASE_END, PHRASE_START
from ..registry import MODELS
from .grounding import FrameFeatures, SAM2GroundingRunner
from .losses import boundary_loss, masked_avg_pool, point_sampled_mask_losses, tmc_loss
from .mllm import MultimodalLLM
from .pretrained import init_from_pretrained, pretrained_submodule_cfgs


@dataclass
class SegQueries:
    """Language side of every object in a batch (n objects).

    seg: (n, C) projected ``[SEG]`` embeddings; tokens: (n, 1+N, C) CMA tokens ([SEG] first);
    padding: (n, 1+N) True on padding.
    """

    seg: torch.Tensor
    tokens: torch.Tensor
    padding: torch.Tensor


class FrameCache:
    """SAM-2 features and per-frame structure prior of the last frames tensor seen in one
    ``predict`` call.

    The rows of one evaluation item (an image's sentences, a video's expressions) are consecutive
    and share their frames: the same tensor, or equal copies when the data preprocessor moved
    each row to the device on its own. Either way they are encoded (and the prior computed) once.
    Only the last entry is kept, so memory stays that of one row's frames; holding the tensor also
    keeps its storage alive, so a matching ``data_ptr`` cannot belong to another tensor.
    """

    def __init__(self) -> None:
        self.frames: torch.Tensor | None = None
        self.entry: tuple[FrameFeatures, torch.Tensor | None] | None = None

    def get(self, frames: torch.Tensor) -> tuple[FrameFeatures, torch.Tensor | None] | None:
        if self.frames is None or not _same_frames(self.frames, frames):
            return None
        return self.entry

    def put(self, frames: torch.Tensor, features: FrameFeatures, frame_prior: torch.Tensor | None) -> None:
        self.frames, self.entry = frames, (features, frame_prior)


class TileCache:
    """The MLLM's vision features of the last image inputs seen (same rules as :class:`FrameCache`):
    the prompts of one item share their image, so the vision tower runs once for all of them."""

    def __init__(self) -> None:
        self.tiles: torch.Tensor | None = None
        self.features = None

    def features_of(self, mllm, vision: dict):
        """``mllm.image_features(**vision)`` (InternVL tiles (N_tiles, 3, S, S) -> (N_tiles, T, D)),
        computed unless ``vision['pixel_values']`` are the last seen."""
        tiles = vision["pixel_values"]
        if self.tiles is None or not _same_frames(self.tiles, tiles):
            self.tiles, self.features = tiles, mllm.image_features(**vision)
        return self.features


@dataclass
class ItemCache:
    """What the prompts of one evaluation item (an image's sentences, a video's expressions) share:
    the vision tower's features of its tiles and SAM-2's features and prior of its frames. Pass one
    to consecutive :meth:`VideoLLaVASAMModel.predict` calls about the same item; a fresh one per
    call recomputes everything (one full prediction per prompt, as Sa2VA's evaluators run)."""

    tiles: TileCache = field(default_factory=TileCache)
    frames: FrameCache = field(default_factory=FrameCache)


def _same_frames(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same pixels: the same memory, or equal values (a per-row copy)."""
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return torch.equal(a, b)


def object_identities(meta: dict, n_objects: int, row: int) -> list[tuple]:
    """One key per object of a sample, equal for the same object anywhere in the batch.

    The GT annotation ids name the object: RefCOCO's ``ann_ids`` (refs share them), referring-VOS
    ``anno_ids`` (a set: an expression's GT is the union of its ids), within the sample's dataset and
    image / video (``sample_id``). Without ids (GCG phrases, ...) every object of a row is distinct.
    """
    if meta.get("ann_ids") is not None:
        ids = [(str(a),) for a in meta["ann_ids"]]
    elif meta.get("anno_ids") is not None:
        ids = [tuple(sorted(str(a) for a in union)) for union in meta["anno_ids"]]
    else:
        return [("row", row, k) for k in range(n_objects)]
    if len(ids) != n_objects:
        raise ValueError(f"sample {meta.get('sample_id', meta.get('id', row))!r}: {len(ids)} annotation ids for "
                         f"{n_objects} masks")
    return [("annotation", meta.get("dataset"), meta.get("sample_id"), i) for i in ids]


def resize_gt_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W) {0,1} masks -> (..., h, w) float {0,1}: bilinear then > 0.5."""
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False) > 0.5
    return resized.reshape(*masks.shape[:-2], *size).float()


@MODELS.register_module()
class VideoLLaVASAMModel(BaseModel):
    """SALMA: InternVL2.5 + LoRA emitting ``[SEG]``, SAM-2 with Mask-Biased CMA, TMC + boundary losses.

    Args:
        mllm: config of an MLLM (``InternVLMLLM``, ``QwenVLMLLM``; the interface: ``models.mllm.base``).
        grounding_encoder: config of ``SAM2GroundingRunner``.
        loss_llm_weight: weight of the LLM next-token CE.
        loss_mask_weight / loss_dice_weight: point-sampled BCE / Dice weights.
        loss_tmc_weight / loss_boundary_weight: auxiliary weights (times the aux warm-up scale).
        tmc_temperature: InfoNCE temperature.
        num_points / oversample_ratio / importance_sample_ratio: mask-loss point sampling.
        max_expr_tokens: expression tokens per object given to CMA (besides ``[SEG]``).
        pretrained: a published Sa2VA folder (or the original SALMA's HF export, same layout):
            InternVL, SAM-2 and ``text_hidden_fcs`` are read from it, replacing
            ``mllm.model_path`` / ``mllm.config`` and ``grounding_encoder.sam2.checkpoint``; the
            tokenizer must give its token ids. CMA, if enabled, and LoRA start fresh (zero gain,
            zero B), so the start predicts as the release (see ``sa2va_release``). A SALMA export
            (``tools/export.py``'s folder) works the same way: its architecture and weights, LoRA
            fresh on the merged LLM (see ``pretrained``).
        data_preprocessor: mmengine data preprocessor config (moves the batch to the device).
    """

    def __init__(
        self,
        *,
        mllm: dict,
        grounding_encoder: dict,
        loss_llm_weight: float = 1.0,
        loss_mask_weight: float = 2.0,
        loss_dice_weight: float = 0.5,
        loss_tmc_weight: float = 0.0,
        loss_boundary_weight: float = 0.0,
        tmc_temperature: float = 0.07,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        max_expr_tokens: int = 16,
        pretrained: str | None = None,
        data_preprocessor: dict | None = None,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        if pretrained is not None:
            mllm, grounding_encoder = pretrained_submodule_cfgs(pretrained, mllm, grounding_encoder)
        self.mllm: MultimodalLLM = MODELS.build(mllm)
        self.grounding_encoder: SAM2GroundingRunner = MODELS.build(grounding_encoder)
        in_dim, out_dim = self.mllm.hidden_size, self.grounding_encoder.hidden_dim
        self.text_hidden_fcs = nn.Sequential(
            nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim), nn.Dropout(0.0)
        )
        if pretrained is not None:
            init_from_pretrained(self, pretrained)
        self.loss_llm_weight = loss_llm_weight
        self.loss_mask_weight = loss_mask_weight
        self.loss_dice_weight = loss_dice_weight
        self.loss_tmc_weight = loss_tmc_weight
        self.loss_boundary_weight = loss_boundary_weight
        self.tmc_temperature = tmc_temperature
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.max_expr_tokens = max_expr_tokens
        self.register_buffer("aux_loss_scale", torch.ones(()))

    @property
    def _grounding_dtype(self) -> torch.dtype:
        return self.text_hidden_fcs[0].weight.dtype

    @property
    def tokenizer(self):
        return self.mllm.tokenizer

    def set_aux_loss_warmup_scale(self, scale: float) -> None:
        """Multiplier of the TMC and boundary weights (the aux warm-up hook ramps it 0 -> 1)."""
        self.aux_loss_scale.fill_(float(scale))

    def set_cma_warmup_scale(self, scale: float) -> None:
        self.grounding_encoder.set_cma_warmup_scale(scale)

    # ------------------------------------------------------------------ entry point
    def forward(self, data: dict, data_samples=None, mode: str = "loss"):
        if mode == "loss":
            return self.compute_loss(data)
        if mode == "predict":
            return self.predict(data)
        raise ValueError(f"mode must be 'loss' or 'predict', got {mode!r}")

    # ------------------------------------------------------------------ language side
    def _seg_queries(self, hidden: torch.Tensor, seg_positions: list[torch.Tensor], expr_positions) -> SegQueries:
        """Project ``[SEG]`` and expression hidden states of n objects.

        hidden: (B, L, D); seg_positions[b]: (n_b,) positions of row b's ``[SEG]`` tokens;
        expr_positions[b][k]: (N_bk,) positions of the k-th object's expression tokens.
        """
        rows, cols, owner, slot = [], [], [], []
        obj = 0
        for b, seg_pos in enumerate(seg_positions):
            for k, pos in enumerate(seg_pos.tolist()):
                expr = expr_positions[b][k][: self.max_expr_tokens].tolist()
                for j, p in enumerate([pos] + expr):
                    rows.append(b)
                    cols.append(p)
                    owner.append(obj)
                    slot.append(j)
                obj += 1
        device = hidden.device
        picked = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
        projected = self.text_hidden_fcs(picked.to(self._grounding_dtype))  # the LLM may run in bf16
        owner_t, slot_t = torch.tensor(owner, device=device), torch.tensor(slot, device=device)
        width = int(slot_t.max()) + 1
        tokens = projected.new_zeros(obj, width, projected.shape[-1])
        tokens[owner_t, slot_t] = projected  # (n, 1+N, C)
        padding = torch.ones(obj, width, dtype=torch.bool, device=device)
        padding[owner_t, slot_t] = False
        return SegQueries(seg=tokens[:, 0], tokens=tokens, padding=padding)

    def _expr_positions(self, expr_ids: torch.Tensor, row: int, n_objects: int) -> list[torch.Tensor]:
        return [(expr_ids[row] == k).nonzero().flatten() for k in range(n_objects)]

    # ------------------------------------------------------------------ training
    def compute_loss(self, data: dict) -> dict[str, torch.Tensor]:
        hidden, loss_llm = self.mllm(
            data["input_ids"], data["attention_mask"], data.get("pixel_values"), data["labels"],
            prompt_masks=data.get("prompt_masks"), image_grid_thw=data.get("image_grid_thw"),
        )
        losses = {"loss_llm": loss_llm * self.loss_llm_weight}

        seg_rows = [b for b, m in enumerate(data["masks"]) if m is not None]
        if not seg_rows:
            losses["loss_mask"] = self._idle_grounding_loss(hidden)
            return losses

        seg_id = self.mllm.seg_token_id
        seg_positions, expr_positions, gt, frames, frame_index, object_index = [], [], [], [], [], []
        identities = []  # one key per object (TMC: the same object is never its own negative)
        frame_offset, obj_offset = 0, 0
        for b in seg_rows:
            masks = data["masks"][b]  # (n_obj, T, H, W)
            positions = (data["input_ids"][b] == seg_id).nonzero().flatten()
            if positions.numel() != masks.shape[0]:
                raise ValueError(
                    f"sample {data['meta'][b].get('id', b)!r}: {positions.numel()} [SEG] tokens but "
                    f"{masks.shape[0]} masks (truncation or a template bug)"
                )
            n_obj, n_frames = masks.shape[:2]
            meta = (data["meta"][b] if data.get("meta") else None) or {}
            identities.extend(object_identities(meta, n_obj, b))
            seg_positions.append(positions)
            expr_positions.append(self._expr_positions(data["expr_ids"], b, n_obj))
            frames.append(data["g_pixel_values"][b])
            gt.append(resize_gt_masks(masks, self.grounding_encoder.low_res_size()).flatten(0, 1))
            frame_index.append((torch.arange(n_frames) + frame_offset).repeat(n_obj))
            object_index.append(torch.arange(n_obj).repeat_interleave(n_frames) + obj_offset)
            frame_offset += n_frames
            obj_offset += n_obj

        device = hidden.device
        queries = self._seg_queries(hidden, [seg_positions[i] for i in range(len(seg_rows))], expr_positions)
        gt_masks = torch.cat(gt).to(device)  # (M, h, w)
        frame_index = torch.cat(frame_index).to(device)  # (M,)
        object_index = torch.cat(object_index).to(device)  # (M,)

        features = self.grounding_encoder.encode_frames(torch.cat(frames).to(device))
        logits = self._decode_pairs(features, frame_index, object_index, queries, gt_masks)  # (M,1,h,w)

        bce, dice = point_sampled_mask_losses(
            logits, gt_masks, self.num_points, self.oversample_ratio, self.importance_sample_ratio
        )
        losses["loss_mask"] = bce * self.loss_mask_weight
        losses["loss_dice"] = dice * self.loss_dice_weight
        if self.loss_tmc_weight > 0:
            keys = {key: i for i, key in enumerate(dict.fromkeys(identities))}
            object_identity = torch.tensor([keys[key] for key in identities], device=device)  # (n,)
            losses["loss_tmc"] = self._tmc(features, frame_index, object_index, object_identity, queries, gt_masks)
        if self.loss_boundary_weight > 0:
            scale = self.loss_boundary_weight * self.aux_loss_scale
            losses["loss_boundary"] = boundary_loss(logits, gt_masks) * scale
        return losses

    def _decode_pairs(
        self,
        features: FrameFeatures,
        frame_index: torch.Tensor,
        object_index: torch.Tensor,
        queries: SegQueries,
        gt_masks: torch.Tensor | None = None,
        frame_prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode M (frame, object) pairs; ``frame_prior`` (F, 1, h, w): the prior of each frame
        when already computed (``predict``'s cache), else it is computed here."""
        if frame_prior is not None:
            prior = frame_prior[frame_index]
        else:
            prior = self.grounding_encoder.prior_for_pairs(features, frame_index, gt_masks)
        return self.grounding_encoder.decode(
            features,
            frame_index,
            queries.seg[object_index],
            queries.tokens[object_index],
            queries.padding[object_index],
            prior,
        )

    def _tmc(
        self, features, frame_index, object_index, object_identity, queries: SegQueries, gt_masks
    ) -> torch.Tensor:
        """TMC on pairs whose object is visible: pre-CMA features pooled in the GT mask vs [SEG].

        ``object_identity`` (n,): pairs of the same object (its frames, its other expressions) are
        not each other's negatives."""
        visible = gt_masks.flatten(1).sum(1) > 0
        pooled = masked_avg_pool(features.image_embeddings[frame_index[visible]], gt_masks[visible])
        groups = object_identity[object_index[visible]]
        loss = tmc_loss(pooled, queries.seg[object_index[visible]], self.tmc_temperature, groups)
        return loss * self.loss_tmc_weight * self.aux_loss_scale

    def _idle_grounding_loss(self, hidden: torch.Tensor) -> torch.Tensor:
        """A zero loss that touches every trainable grounding module.

        Without it, a batch with no mask leaves the decoder, CMA and ``text_hidden_fcs`` out of
        the graph, and ZeRO / DDP ranks disagree on which gradients exist.
        """
        runner = self.grounding_encoder
        h, w = (int(s) for s in runner.sam2.config.vision_config.backbone_feature_sizes[-1])
        channels = runner.sam2.config.vision_config.fpn_hidden_size

        def zeros(*shape: int) -> torch.Tensor:  # in the grounding side's dtype (the LLM may be bf16)
            return torch.zeros(*shape, dtype=self._grounding_dtype, device=hidden.device)

        high_res = [zeros(1, channels, 4 * h, 4 * w), zeros(1, channels, 2 * h, 2 * w)]
        features = FrameFeatures(zeros(1, channels, h, w), high_res)
        seg = self.text_hidden_fcs(hidden[:1, 0].to(self._grounding_dtype))  # (1, C)
        queries = SegQueries(seg=seg, tokens=seg[:, None], padding=torch.zeros(1, 1, dtype=torch.bool, device=hidden.device))
        index = torch.zeros(1, dtype=torch.long, device=hidden.device)
        gt = zeros(1, *runner.low_res_size()) if runner.mask_source == "gt" else None
        logits = self._decode_pairs(features, index, index, queries, gt)
        return logits.sum() * 0.0

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, data: dict, max_new_tokens: int = 32, *, keep_queries: bool = False,
                cache: ItemCache | None = None) -> list[dict]:
        """Generate an answer per sample and decode one mask per generated ``[SEG]``.

        Returns per sample: ``text`` (the decoded answer), ``masks`` bool (n_seg, T, H, W) at
        the original size (n_seg may be 0), ``mask_logits`` low-res float (n_seg, T, h, w),
        and ``meta``; a sample whose ``g_pixel_values`` is None gets no masks. The ``[SEG]`` and
        expression states are the generation's own (``InternVLMLLM.generate(return_hidden=True)``).
        Rows that share their tiles or frames (consecutive rows of one image or video) share one
        vision-tower pass, one SAM-2 encoding and one prior pass (:class:`ItemCache`; give
        ``cache`` to share them across calls too). ``keep_queries``: also ``queries``, the answer's
        :class:`SegQueries` (None without ``[SEG]``), for :meth:`decode_frames` on more frames
        (a long video's frames, chunk by chunk).
        """
        cache = ItemCache() if cache is None else cache
        results = []
        for b in range(data["input_ids"].shape[0]):
            keep = data["attention_mask"][b].bool()
            prompt = data["input_ids"][b][keep][None]  # (1, L_b) without padding
            expr_ids = data["expr_ids"][b][keep]
            vision = self.mllm.row_vision(data, b)  # this row's pixel_values (and Qwen-VL's image_grid_thw)
            features = None if vision is None else cache.tiles.features_of(self.mllm, vision)
            regions = self._regions_of(data, b)
            # prompt_masks only for rows with regions: generate's 4 positional arguments stay the contract.
            extra = {} if regions is None else {"prompt_masks": regions}
            if vision is not None and vision.get("image_grid_thw") is not None:
                extra["image_grid_thw"] = vision["image_grid_thw"]
            pixel_values = None if vision is None else vision["pixel_values"]
            frames = data["g_pixel_values"][b] if data.get("g_pixel_values") is not None else None
            decodes = frames is not None or keep_queries  # only then are the [SEG] states read
            generated = self.mllm.generate(prompt, torch.ones_like(prompt), pixel_values, max_new_tokens,
                                           image_features=features, return_hidden=decodes, **extra)
            new_tokens, hidden = generated if decodes else (generated, None)
            new_tokens = self._until_eos(new_tokens[0])
            text = self.tokenizer.decode(new_tokens, skip_special_tokens=False)
            meta = data["meta"][b] if data.get("meta") is not None else {}
            result = {"text": text, "meta": meta}
            if decodes:
                queries = self._answer_queries(prompt, expr_ids, new_tokens, hidden)
                if keep_queries:
                    result["queries"] = queries
                if frames is not None:
                    size = tuple(meta.get("orig_size", frames.shape[-2:]))
                    result.update(self.decode_frames(queries, frames, size, cache.frames))
            results.append(result)
        return results

    @staticmethod
    def _regions_of(data: dict, row: int) -> list[torch.Tensor] | None:
        """``prompt_masks`` of one row as a one-row list, or None without regions."""
        regions = (data.get("prompt_masks") or [None] * (row + 1))[row]
        return None if regions is None else [regions]

    def _until_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        stop = (tokens == self.tokenizer.eos_token_id) | (tokens == self.tokenizer.pad_token_id)
        return tokens[: int(stop.nonzero()[0])] if stop.any() else tokens

    def _answer_queries(self, prompt, expr_ids, new_tokens, hidden) -> SegQueries | None:
        """Project every generated [SEG] (None without one) and its expression tokens.

        prompt (1, L); new_tokens (T,) up to eos; hidden (1, >= L + T, D): the generation's states
        of the prompt and of each new token as input (teacher forcing would give the same)."""
        full = torch.cat([prompt[0], new_tokens])[None]  # (1, L + T)
        n_prompt = prompt.shape[1]
        seg_positions = (new_tokens == self.mllm.seg_token_id).nonzero().flatten() + n_prompt
        if seg_positions.numel() == 0:
            return None
        expr = self._answer_expr_positions(full[0], n_prompt, seg_positions, expr_ids)
        return self._seg_queries(hidden, [seg_positions], [expr])

    @torch.no_grad()
    def decode_frames(self, queries: SegQueries | None, frames: torch.Tensor, size: tuple[int, int],
                      cache: FrameCache | None = None) -> dict:
        """Masks of every query on every frame (language decode: CMA + prior, as in training).

        queries: n objects (None: no [SEG]); frames (T, 3, G, G); size (H, W) of the masks.
        Returns ``masks`` bool (n, T, H, W) and ``mask_logits`` float (n, T, h, w), on the CPU.
        """
        n_frames = frames.shape[0]
        if queries is None:
            empty = torch.zeros(0, n_frames, *size, dtype=torch.bool)
            return {"masks": empty, "mask_logits": torch.zeros(0, n_frames, *self.grounding_encoder.low_res_size())}
        device = queries.seg.device
        n_seg = queries.seg.shape[0]
        features, frame_prior = self._frame_inputs(frames, device, cache or FrameCache())
        frame_index = torch.arange(n_frames, device=device).repeat(n_seg)
        object_index = torch.arange(n_seg, device=device).repeat_interleave(n_frames)
        logits = self._decode_pairs(features, frame_index, object_index, queries, frame_prior=frame_prior)
        masks = self.grounding_encoder.resize_to(logits, size) > 0
        return {
            "masks": masks.view(n_seg, n_frames, *size).cpu(),
            "mask_logits": logits.view(n_seg, n_frames, *logits.shape[-2:]).float().cpu(),
        }

    def _frame_inputs(self, frames: torch.Tensor, device, cache: FrameCache):
        """SAM-2 features of ``frames`` (T, 3, G, G) and their per-frame prior (T, 1, h, w) or None."""
        cached = cache.get(frames)
        if cached is not None:
            return cached
        runner = self.grounding_encoder
        features = runner.encode_frames(frames.to(device))
        frame_prior = runner.prior_for_pairs(features, torch.arange(frames.shape[0], device=device))
        cache.put(frames, features, frame_prior)
        return features, frame_prior

    def _answer_expr_positions(self, ids, n_prompt, seg_positions, prompt_expr_ids) -> list[torch.Tensor]:
        """Expression tokens of each generated [SEG]: the ``<p>..</p>`` phrase right before it in
        the answer (grounded captions), else the prompt tokens tagged with its index."""
        start_id = self.tokenizer.convert_tokens_to_ids(PHRASE_START)
        end_id = self.tokenizer.convert_tokens_to_ids(PHRASE_END)
        out = []
        for k, pos in enumerate(seg_positions.tolist()):
            phrase = torch.empty(0, dtype=torch.long, device=ids.device)
            before = ids[n_prompt:pos]
            ends = (before == end_id).nonzero().flatten()
            if ends.numel():
                starts = (before[: int(ends[-1])] == start_id).nonzero().flatten()
                if starts.numel():
                    phrase = torch.arange(int(starts[-1]) + 1, int(ends[-1]), device=ids.device) + n_prompt
            if phrase.numel() == 0:
                phrase = (prompt_expr_ids == k).nonzero().flatten()
            out.append(phrase)
        return out
