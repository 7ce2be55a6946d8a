"""Published Sa2VA folders as SALMA models, without their remote code (format: :mod:`.convert.sa2va`).

- ``VideoLLaVASAMModel(pretrained=FOLDER, ...)``, i.e. ``--cfg-options model.pretrained=FOLDER``:
  InternVL, SAM-2 and ``text_hidden_fcs`` come from the release folder, the config decides the rest.
  With ``configs/Sa2VA-1B.py`` (no CMA, no prior) that is the Sa2VA baseline that ``tools/test.py``
  scores; with ``configs/SALMA-1B.py`` a SALMA training starts from it, CMA added fresh (its gain
  starts at 0 and LoRA's B at 0, so the start predicts exactly as the release).
- ``SALMAModel.from_pretrained(FOLDER)`` gives the baseline as an exported model
  (``projects.salma.salma_model.load_sa2va_release``, built from :func:`sa2va_baseline_config`):
  ``predict``, ``tools/infer.py`` and ``save_pretrained`` (a SALMA export of the release) work
  unchanged.

Sa2VA's Qwen-VL releases (``Sa2VAChatModelQwen``: Sa2VA-Qwen2_5-VL-3B / -7B, Sa2VA-Qwen3-VL-4B,
format: :mod:`.convert.sa2va_qwen`) load the same two ways with ``QwenVLMLLM``: its config from the
folder's config.json, every ``model.*`` tensor loaded strictly after the build; the baseline's readers
take the folder's vision scheme (:func:`.convert.sa2va_qwen.qwen_release_vision`) and the system
message its chat template adds (:func:`.convert.sa2va_qwen.release_system_message`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from mmengine.config import Config

from .convert.common import DTYPES
from .convert.sa2va import check_release_tokens, load_text_hidden_fcs, read_sa2va_config
from .convert.sa2va_qwen import (check_qwen_release_tokens, is_sa2va_qwen_config, load_qwen_part, qwen_release_vision,
                                 release_system_message, sa2va_qwen_config)

# What Sa2VA's code fixes without writing it to config.json. SAM-2: {} = the published architecture
# read off the weights (hiera-large, sam2.0 memory settings for Sa2VA-1B / 4B); a dict describes
# another one, as ``grounding_encoder.sam2`` does (tests: tiny models). Video inference: the LLM
# sees the first 5 frames, SAM-2's memory (the release's own memory modules) tracks the rest; SAM-2's
# input is normalised as its HF ``preprocess_image`` does (bfloat16 statistics).
SA2VA_SAM2: dict = {}
SA2VA_TEST_OPTIONS = dict(num_llm_frames=5, llm_frame_sampling="first", propagation="memory",
                          tracker_decoder="shared", llm_frame_masks="language", sam_pixel_stats="sa2va_release")


def release_submodule_cfgs(folder: str | Path, mllm: dict, grounding_encoder: dict) -> tuple[dict, dict]:
    """The InternVL and grounding configs with their weights taken from the release ``folder``:
    ``mllm.model_path`` (the architecture comes from its config.json, so ``mllm.config`` is dropped)
    and ``grounding_encoder.sam2.checkpoint`` (``sam2.size`` / ``sam2.config`` still describe SAM-2,
    which Sa2VA's config.json does not)."""
    config = read_sa2va_config(folder)  # anything but a release folder is refused here, by name
    qwen = is_sa2va_qwen_config(config)
    wanted = "QwenVLMLLM" if qwen else "InternVLMLLM"
    if mllm.get("type", "InternVLMLLM") != wanted:
        raise ValueError(f"model.pretrained={str(folder)!r} is a Sa2VA {'Qwen-VL' if qwen else 'InternVL'} release but "
                         f"model.mllm.type is {mllm.get('type')!r}: use {wanted!r} (a config of that family)")
    if qwen:  # built from the folder's Qwen config, its weights loaded by init_from_release
        mllm = {**mllm, "model_path": None, "config": sa2va_qwen_config(config, source=f"{folder}/config.json")}
    else:
        mllm = {**mllm, "model_path": str(folder), "config": None}
    sam2 = {**grounding_encoder.get("sam2", {}), "checkpoint": str(folder)}
    return mllm, {**grounding_encoder, "sam2": sam2}


def init_from_release(model, folder: str | Path) -> None:
    """What the submodules do not load themselves: the token ids are checked against the folder's
    (:func:`.convert.sa2va.check_release_tokens`) and ``text_hidden_fcs`` is loaded as is; a Qwen-VL
    release's Qwen model is loaded here too (:func:`.convert.sa2va_qwen.load_qwen_part`)."""
    config = read_sa2va_config(folder)
    if is_sa2va_qwen_config(config):
        check_qwen_release_tokens(folder, config, model.tokenizer)
        load_qwen_part(folder, model.mllm.model)
        load_text_hidden_fcs(folder, model.text_hidden_fcs)
        return
    check_release_tokens(folder, model.tokenizer)
    load_text_hidden_fcs(folder, model.text_hidden_fcs)


def sa2va_baseline_config(folder: str | Path, *, dtype: torch.dtype = torch.float32) -> Config:
    """The mmengine config of the Sa2VA baseline read from ``folder``: its own tokenizer, no LoRA,
    no CMA, no prior (``configs/Sa2VA-1B.py``'s model), and Sa2VA's own inference: the best-IoU mask
    of tokens 1-3 (``mask_token='best_iou'``), its SAM-2 input normalisation and its video protocol."""
    name = next(k for k, v in DTYPES.items() if v == dtype)
    config = read_sa2va_config(folder)
    if is_sa2va_qwen_config(config):
        return _qwen_baseline_config(folder, config, name)
    model = dict(
        type="VideoLLaVASAMModel",
        pretrained=str(folder),
        mllm=dict(type="InternVLMLLM", tokenizer=dict(type="load_pretrained_tokenizer", path=str(folder)),
                  llm_lora=None, torch_dtype=name),
        grounding_encoder=dict(type="SAM2GroundingRunner", sam2=dict(SA2VA_SAM2), enable_cma=False,
                               mask_source="none", mask_token="best_iou"),
    )
    return Config(dict(model=model, test_options=dict(SA2VA_TEST_OPTIONS)))


def _qwen_baseline_config(folder: str | Path, config: dict, dtype_name: str) -> Config:
    """The Qwen-VL release's baseline: ``configs/Sa2VA-Qwen2.5-VL-3B.py``'s model (no LoRA, CMA,
    prior) with the folder's tokenizer, Sa2VA's inference options, and the readers' settings its
    ``predict_forward`` implies (``test_dataloader.dataset``, read by ``build.reader_settings`` only:
    this config is not meant for ``tools/test.py``, whose configs name their own readers)."""
    source = f"{folder}/config.json"
    model = dict(
        type="VideoLLaVASAMModel",
        pretrained=str(folder),
        mllm=dict(type="QwenVLMLLM", tokenizer=dict(type="load_pretrained_tokenizer", path=str(folder)),
                  config=sa2va_qwen_config(config, source=source), llm_lora=None, torch_dtype=dtype_name),
        grounding_encoder=dict(type="SAM2GroundingRunner", sam2=dict(SA2VA_SAM2), enable_cma=False,
                               mask_source="none", mask_token="best_iou"),
    )
    reader = dict(vision=qwen_release_vision(folder, config, source=source), system=release_system_message(folder))
    return Config(dict(model=model, test_options=dict(SA2VA_TEST_OPTIONS), test_dataloader=dict(dataset=reader)))
