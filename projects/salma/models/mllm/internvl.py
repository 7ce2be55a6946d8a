"""InternVL (2.5, 3, 3.5; transformers-native), frozen, with LoRA on the language model.

It owns the tokenizer (with SALMA's special tokens added and the embeddings resized), runs the
conversation, returns the LLM loss and the last hidden states (read at ``[SEG]`` positions by the
top-level model), and generates answers for inference. The interface and the precision rules:
:mod:`.base`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from transformers import InternVLConfig, InternVLForConditionalGeneration

from ...constants import IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN
from ...registry import MODELS
from ..convert.internvl import load_internvl
from ..positions import check_position_init, init_internvit_positions
from .base import MultimodalLLM, build_random, check_lora_args


@MODELS.register_module()
class InternVLMLLM(MultimodalLLM):
    """InternVL (transformers-native) + LoRA + SALMA tokens.

    Args:
        tokenizer: tokenizer config dict (see ``datasets.tokenizer``), shared with the dataset.
        model_path: local InternVL folder (native or original remote-code layout), or None.
        config: ``InternVLConfig`` kwargs for a randomly initialised model (tiny tests, shapes).
        freeze_llm / freeze_visual_encoder: freeze the LLM / the vision tower and projector.
            ``freeze_llm=False`` is full fine-tuning: every LLM weight, the embeddings and the LM
            head train. It cannot be combined with ``llm_lora`` (peft would freeze the LLM again,
            leaving only the adapters): that combination is refused.
        llm_lora: ``dict(r, lora_alpha, lora_dropout, target_modules)`` or None (no LoRA); adapters
            on the frozen LLM (``freeze_llm=True``).
        trainable_embeddings: train the input embeddings and LM head (as Sa2VA does), so the
            new ``[SEG]`` row is learnt; ignored when the LLM is not frozen (they train anyway).
        torch_dtype: dtype to load weights in and compute in ('float32', 'bfloat16'); trainable
            weights are kept in float32 either way.
        gradient_checkpointing: recompute LLM activations in backward.
        vision_position_init: position embeddings of a randomly initialised vision tower (``config``
            only; a checkpoint brings its learned ones): ``'sincos'`` (a fixed 2D sine-cosine table,
            see :func:`positions.init_internvit_positions`) or ``'zeros'`` (transformers' init: no position).
    """

    vision_family = "internvl"  # the readers' inputs (``datasets.vision_inputs``)

    def __init__(
        self,
        *,
        tokenizer: dict,
        model_path: str | None = None,
        config: dict | None = None,
        freeze_llm: bool = True,
        freeze_visual_encoder: bool = True,
        llm_lora: dict | None = None,
        trainable_embeddings: bool = True,
        torch_dtype: str = "float32",
        gradient_checkpointing: bool = False,
        vision_position_init: str = "sincos",
    ) -> None:
        super().__init__()
        if (model_path is None) == (config is None):
            raise ValueError("give exactly one of model_path (pretrained) or config (random init)")
        check_position_init(vision_position_init, "vision_position_init")
        check_lora_args(freeze_llm, llm_lora)
        self._init_tokenizer(tokenizer, torch_dtype)
        if model_path is not None:
            self.model = load_internvl(model_path, dtype=self.compute_dtype)
        else:
            self.model = build_random(lambda: InternVLForConditionalGeneration(InternVLConfig(**config)),
                                      self.compute_dtype)
            if vision_position_init == "sincos":
                init_internvit_positions(self.model.model.vision_tower)
        self._grow_vocabulary()
        self.model.config.image_token_id = self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        self._init_training(freeze_llm=freeze_llm, freeze_visual_encoder=freeze_visual_encoder, llm_lora=llm_lora,
                            trainable_embeddings=trainable_embeddings, gradient_checkpointing=gradient_checkpointing)

    @property
    def language_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    @property
    def vision_modules(self) -> list[torch.nn.Module]:
        return [self.model.model.vision_tower, self.model.model.multi_modal_projector]

    def row_vision(self, data: dict, row: int) -> dict | None:
        """Row ``row``'s tiles (``pixel_values``), located by counting image-context tokens (less
        region cells); None without any."""
        if data.get("pixel_values") is None:
            return None
        counts = self.tile_counts(data["input_ids"], data.get("prompt_masks"))
        start = sum(counts[:row])
        return {"pixel_values": data["pixel_values"][start : start + counts[row]]} if counts[row] else None

    # ------------------------------------------------------------------ inputs
    def tile_counts(self, input_ids: torch.Tensor, prompt_masks: Sequence[torch.Tensor | None] | None = None) -> list[int]:
        """InternVL tiles of each row: its ``<IMG_CONTEXT>`` ids minus its region cells, per tile.

        input_ids: (B, L); prompt_masks[b]: bool (n_regions, g, g) or None (see ``datasets.collate``).
        """
        image_token, per_tile = self.model.config.image_token_id, self.model.config.image_seq_length
        counts = []
        for b, ids in enumerate(input_ids):
            n_ctx = int((ids == image_token).sum())
            regions = prompt_masks[b] if prompt_masks is not None else None
            n_region = int(regions.sum()) if regions is not None else 0
            if (n_ctx - n_region) % per_tile or n_ctx < n_region:
                raise ValueError(f"row {b}: {n_ctx} {IMG_CONTEXT_TOKEN} tokens, {n_region} of them region cells: "
                                 f"not a whole number of {per_tile}-token tiles")
            counts.append((n_ctx - n_region) // per_tile)
        return counts

    def image_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | None = None) -> torch.Tensor:
        """The vision tower + projector on every tile: (N_tiles, 3, S, S) -> (N_tiles, T, D). What
        :meth:`embed_inputs` scatters into the ``<IMG_CONTEXT>`` slots; computed once, it serves
        every prompt about the same image (``image_features=`` of :meth:`generate`)."""
        _no_patch_grid(image_grid_thw)
        with self._autocast(pixel_values.device):
            return self.model.model.get_image_features(
                pixel_values=pixel_values.to(self.model.dtype), return_dict=True).pooler_output

    def embed_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                     prompt_masks: Sequence[torch.Tensor | None] | None = None, *,
                     image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings (B, L, D) with the image features in the ``<IMG_CONTEXT>`` slots.

        The slots of row b are filled in order with its tiles' vision tokens (``pixel_values`` holds
        every row's tiles in row order), then, when ``prompt_masks[b]`` is given, the vision tokens
        of its last tile under each region's cells (region by region, raster order): the ``<vp>``
        tokens (Sa2VA's visual prompts). Without regions this is what transformers' InternVL does
        (``get_image_features`` scattered into the image-token positions). ``image_features``: the
        tiles' :meth:`image_features`, already computed (then ``pixel_values`` is not read).
        """
        embeds = self.model.get_input_embeddings()(input_ids)  # (B, L, D)
        slots = input_ids == self.model.config.image_token_id  # (B, L)
        if pixel_values is None and image_features is None:
            if slots.any():
                raise ValueError(f"{int(slots.sum())} {IMG_CONTEXT_TOKEN} tokens but no pixel_values")
            return embeds
        features = self.image_features(pixel_values) if image_features is None else image_features  # (N_tiles, T, D)
        counts = self.tile_counts(input_ids, prompt_masks)
        if sum(counts) != features.shape[0]:
            raise ValueError(f"the rows' {IMG_CONTEXT_TOKEN} tokens make {sum(counts)} tiles, pixel_values has "
                             f"{features.shape[0]}")
        fill, start = [], 0
        for b, n in enumerate(counts):
            tiles = features[start:start + n]  # (n, T, D)
            start += n
            fill.append(tiles.flatten(0, 1))
            regions = prompt_masks[b] if prompt_masks is not None else None
            if regions is not None and regions.numel():
                if n == 0:
                    raise ValueError(f"row {b}: regions given without an image")
                grid = math.isqrt(tiles.shape[1])
                if tuple(regions.shape[1:]) != (grid, grid):
                    raise ValueError(f"row {b}: regions on a {tuple(regions.shape[1:])} grid, the tiles' vision tokens "
                                     f"form a ({grid}, {grid}) grid")
                cells = regions.to(tiles.device).flatten(1)  # (n_regions, T) bool
                fill.append(tiles[-1][cells.nonzero()[:, 1]])  # (sum K_i, D): region-major, raster order
        fill_t = torch.cat(fill).to(embeds.dtype)  # (n_slots, D)
        if fill_t.shape[0] != int(slots.sum()):
            raise ValueError(f"{int(slots.sum())} {IMG_CONTEXT_TOKEN} slots for {fill_t.shape[0]} vision tokens")
        return embeds.masked_scatter(slots[..., None], fill_t)

    # ------------------------------------------------------------------ running
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        prompt_masks: Sequence[torch.Tensor | None] | None = None,
        image_grid_thw: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the conversation.

        input_ids, attention_mask, labels: (B, L); pixel_values: (N_tiles, 3, S, S) or None;
        prompt_masks: per row bool (n_regions, g, g) or None (visual prompts, see ``embed_inputs``).
        Returns the last hidden states (B, L, D) and the next-token CE over answer tokens
        (None without labels). The LM head runs only on supervised positions.
        """
        _no_patch_grid(image_grid_thw)
        with self._autocast(input_ids.device):
            embeds = self.embed_inputs(input_ids, pixel_values, prompt_masks)
            hidden = self.model.model(inputs_embeds=embeds, attention_mask=attention_mask,
                                      use_cache=False).last_hidden_state  # (B, L, D)
        return hidden, self.lm_loss(hidden, labels)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        *,
        prompt_masks: Sequence[torch.Tensor | None] | None = None,
        image_features: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding; returns the new token ids (B, T_new), padded with the pad id.

        The prompt is embedded by ``embed_inputs`` (image and region tokens as in ``forward``;
        ``image_features`` precomputed, see :meth:`image_features`). ``return_hidden``: also the
        last hidden states (B, L + T_new, D) of the prompt and of every new token, read from the
        generation itself (what a teacher-forced ``forward`` over prompt + answer gives, without
        running it: the prefill's states, each step's, and one step more for the last new token,
        on the same KV cache). A token's state is the one computed with it as *input*, the
        position ``[SEG]`` is read at in training (Sa2VA#67 is this off-by-one).
        """
        _no_patch_grid(image_grid_thw)
        # An image placeholder in the answer would desynchronise image tokens and features.
        suppress = self.tokenizer.convert_tokens_to_ids([IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN])
        with self._autocast(input_ids.device):
            embeds = self.embed_inputs(input_ids, pixel_values, prompt_masks, image_features=image_features)
            out = self.model.generate(
                input_ids=input_ids,
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                suppress_tokens=suppress,
                return_dict_in_generate=return_hidden,
                output_hidden_states=return_hidden,
            )
            if not return_hidden:
                return out[:, input_ids.shape[1] :]
            new_tokens = out.sequences[:, input_ids.shape[1] :]
            # hidden_states[step][-1]: the last layer (after the final norm) of that step's inputs:
            # step 0 the prompt (B, L, D), step i the new token i-1 (B, 1, D)
            states = [step[-1] for step in out.hidden_states]
            last = self.language_model(
                inputs_embeds=self.model.get_input_embeddings()(new_tokens[:, -1:]),
                attention_mask=torch.cat([attention_mask, torch.ones_like(new_tokens)], dim=1),
                past_key_values=out.past_key_values, use_cache=True,
            ).last_hidden_state  # (B, 1, D): the last new token as input
        return new_tokens, torch.cat([*states, last], dim=1)


def _no_patch_grid(image_grid_thw: torch.Tensor | None) -> None:
    if image_grid_thw is not None:
        raise ValueError("image_grid_thw given to InternVL, whose inputs are 448-px tiles: the batch was read with "
                         "vision.family='qwen_vl' (datasets.vision_inputs); the readers and the MLLM must be of one family")
