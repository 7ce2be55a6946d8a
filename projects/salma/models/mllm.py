"""The multimodal LLM: transformers' native InternVL, frozen, with LoRA on the language model.

It owns the tokenizer (with SALMA's special tokens added and the embeddings resized), runs the
conversation, returns the LLM loss and the last hidden states (read at ``[SEG]`` positions by the
top-level model), and generates answers for inference.

Mixed precision (``torch_dtype='bfloat16'``): frozen weights stay bf16, trainable ones (LoRA, the
embeddings and LM head) are fp32 master weights, because an AdamW step of ~4e-5 on a bf16 weight
of ~0.02 rounds to nothing. The forward and ``generate`` autocast to ``torch_dtype``, so training
(under the AMP optim wrapper) and prediction (no autocast of its own) compute alike, in bf16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from torch import nn
from transformers import InternVLConfig, InternVLForConditionalGeneration

from ..constants import IGNORE_INDEX, IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN, SEG_TOKEN
from ..datasets.tokenizer import build_tokenizer
from ..registry import MODELS
from .convert.common import DTYPES

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@MODELS.register_module()
class InternVLMLLM(nn.Module):
    """InternVL2.5 (transformers-native) + LoRA + SALMA tokens.

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
    """

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
    ) -> None:
        super().__init__()
        if (model_path is None) == (config is None):
            raise ValueError("give exactly one of model_path (pretrained) or config (random init)")
        if not freeze_llm and llm_lora is not None:
            raise ValueError(
                "mllm.freeze_llm=False (full fine-tuning) with mllm.llm_lora set: LoRA freezes every LLM weight but "
                "its adapters, so the LLM would not train. Use freeze_llm=True with llm_lora (LoRA), or "
                "freeze_llm=False with llm_lora=None (full fine-tuning)")
        self.tokenizer = build_tokenizer(tokenizer)
        self.compute_dtype = dtype = DTYPES[torch_dtype]
        if model_path is not None:
            from .convert.internvl import load_internvl

            self.model = load_internvl(model_path, dtype=dtype)
        else:
            self.model = InternVLForConditionalGeneration(InternVLConfig(**config)).to(dtype)
        self._sync_tokens()

        self.model.requires_grad_(True)
        if freeze_visual_encoder:
            self.model.model.vision_tower.requires_grad_(False)
            self.model.model.multi_modal_projector.requires_grad_(False)
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
        if dtype != torch.float32:
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

    def _sync_tokens(self) -> None:
        """Grow the embeddings if the tokenizer outgrew them; point the model at its image id.

        Checkpoints often pad the vocabulary (InternVL2.5-1B: 151674 rows for 151665 tokens),
        so the new tokens may already have rows: the embeddings are never shrunk.
        """
        if len(self.tokenizer) > self.model.get_input_embeddings().num_embeddings:
            self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        self.model.config.image_token_id = self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        self.seg_token_id = self.tokenizer.convert_tokens_to_ids(SEG_TOKEN)

    @property
    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    @property
    def hidden_size(self) -> int:
        return self.model.config.text_config.hidden_size

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the conversation.

        input_ids, attention_mask, labels: (B, L); pixel_values: (N_tiles, 3, S, S) or None.
        Returns the last hidden states (B, L, D) and the next-token CE over answer tokens
        (None without labels). The LM head runs only on supervised positions.
        """
        if pixel_values is not None:
            pixel_values = pixel_values.to(self.model.dtype)
        with self._autocast(input_ids.device):
            hidden = self.model.model(
                input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, use_cache=False
            ).last_hidden_state  # (B, L, D)
            if labels is None:
                return hidden, None
            targets = labels[:, 1:]
            supervised = targets != IGNORE_INDEX  # (B, L-1)
            logits = self.model.lm_head(hidden[:, :-1][supervised])  # (n_supervised, V)
        if logits.shape[0] == 0:
            return hidden, logits.sum() * 0.0
        return hidden, F.cross_entropy(logits.float(), targets[supervised])

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 32,
    ) -> torch.Tensor:
        """Greedy decoding; returns the new token ids (B, T_new), padded with the pad id."""
        if pixel_values is not None:
            pixel_values = pixel_values.to(self.model.dtype)
        # An image placeholder in the answer would desynchronise image tokens and features.
        suppress = self.tokenizer.convert_tokens_to_ids([IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN])
        with self._autocast(input_ids.device):
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixel_values,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                suppress_tokens=suppress,
            )
        return out[:, input_ids.shape[1] :]
