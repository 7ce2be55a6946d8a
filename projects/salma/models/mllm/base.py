"""What the SALMA model needs from a multimodal LLM, and the parts every family shares.

The model above (``llava_sam2.VideoLLaVASAMModel``) talks to its MLLM only through this
interface; nothing family-specific sits above it:

* ``tokenizer`` (SALMA's tokens added, the embeddings grown for them) and ``seg_token_id``;
* ``hidden_size``: the LLM width (``text_hidden_fcs`` reads it);
* ``forward(input_ids, attention_mask, pixel_values, labels, *, prompt_masks, image_grid_thw)``
  -> (last hidden states (B, L, D), LM loss over answer tokens or None);
* ``generate(input_ids, attention_mask, pixel_values, max_new_tokens, *, prompt_masks,
  image_features, image_grid_thw, return_hidden)`` -> new ids (and the hidden states the
  generation itself computed, with each token as input);
* ``image_features(pixel_values, image_grid_thw=None)``: the vision tower + projector, computed
  once and shared by the prompts of one image (``ItemCache``);
* ``row_vision(data, row)``: the vision inputs of one row of a collated batch (``pixel_values``
  and, for Qwen-VL, ``image_grid_thw``), or None;
* ``language_model``: the module LoRA adapts (and export merges).

The vision inputs themselves (tiles or patches, placeholder tokens) come from the readers
(``datasets.vision_inputs``), one scheme per family.

Mixed precision (``torch_dtype='bfloat16'``): frozen weights stay bf16, trainable ones (LoRA, the
embeddings and LM head) are fp32 master weights, because an AdamW step of ~4e-5 on a bf16 weight
of ~0.02 rounds to nothing. The forward and ``generate`` autocast to ``torch_dtype``, so training
(under the AMP optim wrapper) and prediction (no autocast of its own) compute alike, in bf16.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from ...constants import IGNORE_INDEX, SEG_TOKEN
from ...datasets.tokenizer import build_tokenizer
from ..convert.common import DTYPES

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_random(factory, dtype: torch.dtype) -> nn.Module:
    """``factory()`` (a randomly initialised transformers model) with its tensors created in ``dtype``
    and then cast to it (buffers too), so a real-size bf16 build never holds an fp32 copy."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = factory()
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype)


def check_lora_args(freeze_llm: bool, llm_lora: dict | None) -> None:
    if not freeze_llm and llm_lora is not None:
        raise ValueError(
            "mllm.freeze_llm=False (full fine-tuning) with mllm.llm_lora set: LoRA freezes every LLM weight but "
            "its adapters, so the LLM would not train. Use freeze_llm=True with llm_lora (LoRA), or "
            "freeze_llm=False with llm_lora=None (full fine-tuning)")


class MultimodalLLM(nn.Module):
    """Base of the family wrappers: tokenizer, trainable parts, precision, LM loss.

    A subclass sets ``self.model`` (the transformers model, its ``lm_head`` on top) and defines
    ``language_model``, ``vision_modules`` (what ``freeze_visual_encoder`` freezes) and the
    interface methods of the module docstring; its ``__init__`` calls :meth:`_init_tokenizer`
    first and :meth:`_init_training` once the model is built.
    """

    model: nn.Module
    vision_family: str  # which ``datasets.vision_inputs`` scheme the readers must use

    def _init_tokenizer(self, tokenizer: dict, torch_dtype: str) -> None:
        self.tokenizer = build_tokenizer(tokenizer)
        self.compute_dtype = DTYPES[torch_dtype]

    def _init_training(self, *, freeze_llm: bool, freeze_visual_encoder: bool, llm_lora: dict | None,
                       trainable_embeddings: bool, gradient_checkpointing: bool,
                       untie_embeddings: bool = False) -> None:
        """Freeze, add LoRA, keep trainable weights fp32 (see the module docstring).

        ``untie_embeddings``: a model whose LM head is its input embedding (Qwen2.5-VL-3B,
        Qwen3-VL-4B) gets an LM head of its own, a copy, so the two train apart, as Sa2VA's
        ``modules_to_save=['lm_head', 'embed_tokens']`` does (peft wraps each in its own copy).
        """
        if untie_embeddings and self.model.config.get_text_config().tie_word_embeddings:
            self.model.lm_head.weight = nn.Parameter(self.model.get_input_embeddings().weight.detach().clone())
            self.model.config.tie_word_embeddings = False
            self.model.config.get_text_config().tie_word_embeddings = False
        self.model.requires_grad_(True)
        if freeze_visual_encoder:
            for module in self.vision_modules:
                module.requires_grad_(False)
        if freeze_llm:
            self.language_model.requires_grad_(False)
            self.model.lm_head.requires_grad_(False)
        if llm_lora is not None:
            lora = dict(llm_lora)
            lora.setdefault("target_modules", list(DEFAULT_LORA_TARGETS))
            inject_adapter_in_model(LoraConfig(**lora), self.language_model)  # new params: trainable
        if freeze_llm and trainable_embeddings:
            self.model.get_input_embeddings().requires_grad_(True)
            self.model.lm_head.requires_grad_(True)
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.enable_input_require_grads()
        if self.compute_dtype != torch.float32:
            self._keep_trainable_in_float32()

    def _keep_trainable_in_float32(self) -> None:
        """Trainable parameters become fp32 master weights; the embedding output is cast back to
        ``compute_dtype``, so the residual stream stays as the pretrained model computes it."""
        for param in self.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
        compute_dtype = self.compute_dtype
        self.model.get_input_embeddings().register_forward_hook(lambda module, args, out: out.to(compute_dtype))

    def _autocast(self, device: torch.device):
        """Autocast to ``compute_dtype`` (fp32 master weights are cast per op, as under AMP)."""
        return torch.autocast(device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32)

    def _grow_vocabulary(self) -> None:
        """Grow the embeddings if the tokenizer outgrew them (never shrink: checkpoints often pad
        the vocabulary, InternVL2.5-1B has 151674 rows for 151665 tokens)."""
        if len(self.tokenizer) > self.model.get_input_embeddings().num_embeddings:
            self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        self.seg_token_id = self.tokenizer.convert_tokens_to_ids(SEG_TOKEN)

    @property
    def language_model(self) -> nn.Module:
        raise NotImplementedError

    @property
    def vision_modules(self) -> Sequence[nn.Module]:
        raise NotImplementedError

    @property
    def hidden_size(self) -> int:
        return self.model.config.text_config.hidden_size

    def lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Next-token CE over answer tokens (the LM head only on supervised positions); None
        without labels. hidden: (B, L, D); labels: (B, L), ``IGNORE_INDEX`` off the answers."""
        if labels is None:
            return None
        targets = labels[:, 1:]
        supervised = targets != IGNORE_INDEX  # (B, L-1)
        with self._autocast(hidden.device):
            logits = self.model.lm_head(hidden[:, :-1][supervised])  # (n_supervised, V)
        if logits.shape[0] == 0:
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), targets[supervised])
