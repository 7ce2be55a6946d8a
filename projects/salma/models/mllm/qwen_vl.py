"""Qwen2.5-VL and Qwen3-VL (transformers-native), frozen, with LoRA on the language model.

The same interface as InternVL (:mod:`.base`), with the family's own rules:

* vision inputs are patch rows with a grid per image (``image_grid_thw``; the readers make them,
  ``datasets.vision_inputs.QwenVLPatches``), one ``<|image_pad|>`` per merged 2x2 patch group;
* positions are multimodal rotary ones (temporal, height, width per token), from the model's own
  ``get_rope_index``, passed explicitly to the language model (never left to transformers'
  per-model ``rope_deltas`` state, which a previous call can leave stale);
* Qwen3-VL adds the vision tower's intermediate features to the first LLM layers at the image
  positions ("deepstack"); they travel with the image features.

Generation is greedy on one KV cache, written out here: the prompt's positions come from
``get_rope_index``, every new token's is one more than the last (text after the image continues
from the largest position). Visual prompts (regions) need InternVL's fixed tile grid and are
refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from ...constants import QWEN_IMAGE_PAD, QWEN_VISION_END, QWEN_VISION_START
from ...datasets.io import read_json
from ...registry import MODELS
from .base import MultimodalLLM, build_random, check_lora_args

FAMILIES = {
    "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
    "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration),
}


@dataclass
class QwenImageFeatures:
    """The merged vision tokens of some images (N, D) and, for Qwen3-VL, the deepstack
    features (one (N, D) tensor per LLM layer they are added to; None for Qwen2.5-VL)."""

    tokens: torch.Tensor
    deepstack: list[torch.Tensor] | None


@MODELS.register_module()
class QwenVLMLLM(MultimodalLLM):
    """Qwen2.5-VL / Qwen3-VL + LoRA + SALMA tokens.

    Args:
        tokenizer: tokenizer config dict (see ``datasets.tokenizer``), shared with the dataset.
        model_path: a local folder in transformers' layout (``config.json`` ``model_type``
            'qwen2_5_vl' or 'qwen3_vl'), or None.
        config: the config kwargs of a randomly initialised model; ``model_type`` picks the family
            (default 'qwen2_5_vl').
        freeze_llm, freeze_visual_encoder, llm_lora, trainable_embeddings, torch_dtype,
        gradient_checkpointing: as ``InternVLMLLM`` (the vision tower includes its merger).
        untie_embeddings: give a tied LM head its own copy of the embeddings, so the two train
            apart, as Sa2VA's ``modules_to_save=['lm_head', 'embed_tokens']`` does (the shipped
            Qwen-VL configs; :meth:`MultimodalLLM._init_training`).
    """

    vision_family = "qwen_vl"  # the readers' inputs (``datasets.vision_inputs``)

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
        untie_embeddings: bool = False,
    ) -> None:
        super().__init__()
        if (model_path is None) == (config is None):
            raise ValueError("give exactly one of model_path (pretrained) or config (random init)")
        check_lora_args(freeze_llm, llm_lora)
        self._init_tokenizer(tokenizer, torch_dtype)
        if model_path is not None:
            config_cls, model_cls = FAMILIES[_folder_family(model_path)]
            self.model = model_cls.from_pretrained(model_path, dtype=self.compute_dtype, local_files_only=True,
                                                   trust_remote_code=False)
        else:
            config = dict(config)
            family = config.pop("model_type", "qwen2_5_vl")
            if family not in FAMILIES:
                raise ValueError(f"mllm.config.model_type must be one of {sorted(FAMILIES)}, got {family!r}")
            config_cls, model_cls = FAMILIES[family]
            self.model = build_random(lambda: model_cls(config_cls(**config)), self.compute_dtype)
        self._grow_vocabulary()
        ids = self.tokenizer.convert_tokens_to_ids([QWEN_IMAGE_PAD, QWEN_VISION_START, QWEN_VISION_END])
        unknown = [t for t, i in zip((QWEN_IMAGE_PAD, QWEN_VISION_START, QWEN_VISION_END), ids)
                   if i is None or i == self.tokenizer.unk_token_id]
        if unknown:
            raise ValueError(f"the tokenizer has no {unknown}: Qwen-VL needs its vision tokens (a tiny tokenizer: "
                             "build_tiny_tokenizer(family='qwen_vl'))")
        self.model.config.image_token_id, self.model.config.vision_start_token_id = ids[0], ids[1]
        self.vision_token_ids = ids
        self._init_training(freeze_llm=freeze_llm, freeze_visual_encoder=freeze_visual_encoder, llm_lora=llm_lora,
                            trainable_embeddings=trainable_embeddings, gradient_checkpointing=gradient_checkpointing,
                            untie_embeddings=untie_embeddings)

    @property
    def family(self) -> str:
        return self.model.config.model_type

    @property
    def language_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    @property
    def vision_modules(self) -> list[torch.nn.Module]:
        return [self.model.model.visual]

    @property
    def merge_size(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

    # ------------------------------------------------------------------ inputs
    def row_vision(self, data: dict, row: int) -> dict | None:
        """Row ``row``'s patch rows and grids: the batch's images in order, as many as its
        ``<|image_pad|>`` tokens take. None without any."""
        if data.get("pixel_values") is None:
            return None
        grids = data["image_grid_thw"]  # (N_images, 3)
        tokens_per_image = (grids.prod(-1) // self.merge_size ** 2).tolist()
        patches_per_image = grids.prod(-1).tolist()
        counts = (data["input_ids"] == self.model.config.image_token_id).sum(1).tolist()
        image, patch = 0, 0
        for b, count in enumerate(counts):
            first_image, first_patch = image, patch
            while count > 0:
                if image == len(tokens_per_image):
                    raise ValueError(f"row {b}: more {QWEN_IMAGE_PAD} tokens than image_grid_thw's images give")
                count -= tokens_per_image[image]
                patch += patches_per_image[image]
                image += 1
            if count < 0:
                raise ValueError(f"row {b}: its {QWEN_IMAGE_PAD} tokens end inside an image of image_grid_thw")
            if b == row:
                if image == first_image:
                    return None
                return {"pixel_values": data["pixel_values"][first_patch:patch],
                        "image_grid_thw": grids[first_image:image]}
        raise IndexError(f"row {row} of a batch of {len(counts)}")

    def image_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> QwenImageFeatures:
        """Vision tower + merger: (N_patches, D_p) -> (N_patches / merge**2, D) tokens."""
        if image_grid_thw is None:
            raise ValueError("Qwen-VL image features need image_grid_thw (each image's patch grid)")
        with self._autocast(pixel_values.device):
            out = self.model.model.get_image_features(pixel_values.to(self.model.dtype), image_grid_thw,
                                                      return_dict=True)
        deepstack = getattr(out, "deepstack_features", None)
        return QwenImageFeatures(torch.cat(out.pooler_output), None if deepstack is None else list(deepstack))

    def embed_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     pixel_values: torch.Tensor | None, image_grid_thw: torch.Tensor | None,
                     features: QwenImageFeatures | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(embeddings (B, L, D) with the image tokens in the ``<|image_pad|>`` slots, positions
        (3, B, L), the language model's extra inputs: Qwen3-VL's deepstack features and where
        they go)."""
        embeds = self.model.get_input_embeddings()(input_ids)
        slots = input_ids == self.model.config.image_token_id  # (B, L)
        extra = {}
        if pixel_values is None and features is None:
            if slots.any():
                raise ValueError(f"{int(slots.sum())} {QWEN_IMAGE_PAD} tokens but no pixel_values")
            image_grid_thw = None
        else:
            features = self.image_features(pixel_values, image_grid_thw) if features is None else features
            if features.tokens.shape[0] != int(slots.sum()):
                raise ValueError(f"{int(slots.sum())} {QWEN_IMAGE_PAD} slots for {features.tokens.shape[0]} vision "
                                 "tokens")
            embeds = embeds.masked_scatter(slots[..., None], features.tokens.to(embeds.dtype))
            if features.deepstack is not None:
                extra = {"visual_pos_masks": slots,
                         "deepstack_visual_embeds": [f.to(embeds.dtype) for f in features.deepstack]}
        positions, _ = self.model.model.get_rope_index(input_ids, mm_token_type_ids=slots.int(),
                                                       image_grid_thw=image_grid_thw, attention_mask=attention_mask)
        return embeds, positions, extra

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
        """As ``InternVLMLLM.forward``: last hidden states (B, L, D) and the answer tokens' CE.
        pixel_values: (N_patches, D_p) of every row's images; image_grid_thw: (N_images, 3)."""
        _no_regions(prompt_masks)
        with self._autocast(input_ids.device):
            embeds, positions, extra = self.embed_inputs(input_ids, attention_mask, pixel_values, image_grid_thw)
            hidden = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions,
                                         use_cache=False, **extra).last_hidden_state  # (B, L, D)
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
        image_features: QwenImageFeatures | None = None,
        image_grid_thw: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding of unpadded prompts (B, L); new ids (B, T_new), the pad id after a
        row's EOS. ``return_hidden``: also the last hidden states (B, L + T_new, D), each token's
        computed with it as input (one more step feeds the last new token), as ``InternVLMLLM``."""
        _no_regions(prompt_masks)
        if not bool(attention_mask.all()):
            raise ValueError("Qwen-VL generate takes unpadded prompts (rows of one length); predict gives one row "
                             "at a time")
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        embed = self.model.get_input_embeddings()
        with self._autocast(input_ids.device):
            embeds, positions, extra = self.embed_inputs(input_ids, attention_mask, pixel_values, image_grid_thw,
                                                         image_features)
            out = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions,
                                      use_cache=True, **extra)
            states, cache, mask = [out.last_hidden_state], out.past_key_values, attention_mask
            next_position = positions[:, :, -1].max(0).values + 1  # (B,): text continues past the largest
            finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            tokens = []
            for step in range(max_new_tokens):
                logits = self.model.lm_head(out.last_hidden_state[:, -1]).float()  # (B, V)
                logits[:, self.vision_token_ids] = float("-inf")  # a placeholder would desynchronise features
                token = torch.where(finished, torch.full_like(finished, pad, dtype=torch.long), logits.argmax(-1))
                tokens.append(token)
                finished |= token == eos
                done = bool(finished.all()) or step == max_new_tokens - 1
                if done and not return_hidden:
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                position = next_position.view(1, -1, 1).expand(3, -1, 1)
                out = self.language_model(inputs_embeds=embed(token[:, None]), attention_mask=mask,
                                          position_ids=position, past_key_values=cache, use_cache=True)
                cache, next_position = out.past_key_values, next_position + 1
                states.append(out.last_hidden_state)
                if done:
                    break
        new_tokens = torch.stack(tokens, dim=1) if tokens else input_ids[:, :0]
        return (new_tokens, torch.cat(states, dim=1)) if return_hidden else new_tokens


def _folder_family(folder: str) -> str:
    path = os.path.join(folder, "config.json")
    model_type = read_json(path, expect=dict, what="(a transformers model config)").get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"{path}: model_type {model_type!r} is not a Qwen-VL family this wrapper runs "
                         f"({sorted(FAMILIES)})")
    return model_type


def _no_regions(prompt_masks) -> None:
    if prompt_masks is not None and any(m is not None and m.numel() for m in prompt_masks):
        raise ValueError("visual prompts (regions) need InternVL's fixed token grid per tile; Qwen-VL's dynamic "
                         "resolution has none")
