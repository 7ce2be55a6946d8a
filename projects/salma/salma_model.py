"""An exported SALMA model: one self-contained folder, rebuilt without the mmengine config.

    SALMAModel.from_pretrained(folder, device=None, dtype=None).predict(image=..., text=...)

The folder (written by :meth:`SALMAModel.save_pretrained`, see ``projects.salma.export``)::

    config.json         SALMAConfig: InternVL and SAM-2 configs, CMA / prior settings, the readers'
                        image and template settings, video propagation settings; and the size and
                        BLAKE2b hash of model.safetensors (checked at load)
    model.safetensors   every weight: InternVL with LoRA merged (grown embeddings), SAM-2 with its
                        fine-tuned decoder, CMA, text_hidden_fcs and, under ``tracker.``, SAM-2's
                        memory modules for video propagation
    tokenizer files     tokenizer.save_pretrained, SALMA's tokens included, with a chat template

The model that predicts is the training-side ``VideoLLaVASAMModel`` (built without LoRA), and the
inputs are built by the evaluation readers' code (``datasets.inference``), so ``predict`` gives
what ``tools/test.py`` would give for the same image / video and expression.

Loading executes nothing from the folder: the config is JSON checked strictly
(``export_checks``), weights are safetensors, the tokenizer is loaded with
``trust_remote_code=False``.
"""
from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from mmengine.config import Config
from transformers.initialization import no_init_weights

from .build import (EvalOptions, build_exported_model, build_exported_tracker, build_model, merge_lora, plain,
                    reader_settings, tracker_for)
from .datasets.chat import jinja_chat_template
from .datasets.collate import expand_eval_sample, salma_collate
from .datasets.frames import VideoFrames, open_video
from .datasets.inference import ImageInput, InferenceReader, RegionInput
from .datasets.io import read_json
from .datasets.tokenizer import build_tokenizer
from .models.convert.common import DTYPES, check_state_dict
from .models.convert.sa2va import is_sa2va_folder
from .models.export_checks import MLLM_KEYS, VIDEO_KEYS, check_salma_config
from .models.export_format import (CONFIG_NAME, WEIGHTS_KEY, WEIGHTS_NAME, check_weights_file, read_config,  # noqa: F401
                                   weights_record)
from .models.llava_sam2 import VideoLLaVASAMModel
from .models.sa2va_release import sa2va_baseline_config
from .models.video import SAM2MemoryTracker, VideoPredictor, VideoStream
from .models.weight_shapes import check_shapes_before_building
from .safe_io import atomic_path, regular_file, write_text_atomic

FORMAT = "salma"
FORMAT_VERSION = 1
TRACKER_PREFIX = "tracker."


@dataclass
class SALMAConfig:
    """Everything that rebuilds an exported model.

    Attributes:
        internvl: ``InternVLConfig`` dict (vocabulary already grown for SALMA's tokens), or None
            for a Qwen-VL model; exactly one of ``internvl`` and ``qwen_vl`` is given (the other
            is not written).
        qwen_vl: ``Qwen2_5_VLConfig`` / ``Qwen3VLConfig`` dict (its ``model_type`` says which).
        sam2: ``Sam2Config`` dict.
        grounding: ``SAM2GroundingRunner`` arguments besides ``sam2``: enable_cma, cma, mask_source,
            mask_token (:func:`upgrade_grounding` reads exports written before it).
        max_expr_tokens: expression tokens per object given to CMA.
        inputs: reader settings (``SalmaDataset`` arguments): image_size, image_seq_length,
            min/max_dynamic_patch, use_thumbnail, sam_image_size, system, max_length, sam_pixel_stats
            (optional: 'imagenet' when absent), vision (Qwen-VL's ``datasets.vision_inputs``
            arguments; absent for InternVL, whose tiling the other keys give).
        video: num_llm_frames, llm_frame_sampling, propagation, tracker_decoder (the evaluation's
            ``test_options`` of the same names).
        tracker: ``Sam2VideoConfig`` dict of the memory tracker; None without memory propagation.
        max_new_tokens: default generation budget.
        source: provenance (config, checkpoint, merged LoRA layers), informative only.
    """

    sam2: dict
    grounding: dict
    max_expr_tokens: int
    inputs: dict
    video: dict
    internvl: dict | None = None
    qwen_vl: dict | None = None
    tracker: dict | None = None
    max_new_tokens: int = 32
    source: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        body = {k: v for k, v in asdict(self).items() if k not in MLLM_KEYS or v is not None}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **body}

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "config") -> SALMAConfig:
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: not a SALMA export (format {data.get('format')!r} version "
                             f"{data.get('format_version')!r}; expected {FORMAT!r} version {FORMAT_VERSION})")
        names = {f.name for f in fields(cls)}
        body = {k: v for k, v in data.items() if k not in ("format", "format_version", WEIGHTS_KEY)}
        unknown = sorted(set(body) - names)
        missing = sorted(f.name for f in fields(cls)
                         if f.name not in body and f.default is MISSING and f.default_factory is MISSING)
        if unknown or missing:
            raise ValueError(f"{source}: unknown keys {unknown}, missing keys {missing}")
        if sum(body.get(k) is not None for k in MLLM_KEYS) != 1:
            raise ValueError(f"{source}: exactly one of {list(MLLM_KEYS)} (the MLLM's config) must be given")
        if isinstance(body.get("grounding"), dict):
            body["grounding"] = upgrade_grounding(body["grounding"])
        check_salma_config(body, source=source)
        return cls(**body)

    def save(self, folder: str, *, weights: dict | None = None) -> None:
        """Write config.json; ``weights`` (``export_checks.weights_record``) is stored next to it."""
        data = self.to_dict() if weights is None else {**self.to_dict(), WEIGHTS_KEY: weights}
        write_text_atomic(os.path.join(folder, CONFIG_NAME), json.dumps(data, indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, folder: str) -> SALMAConfig:
        return cls.from_dict(read_config(folder), source=os.path.join(folder, CONFIG_NAME))


def upgrade_grounding(grounding: dict) -> dict:
    """The ``grounding`` section of an export written before ``mask_token`` existed, in today's keys.

    Those exports decoded with mask token 0 (``'first'``), the token they trained, unless they were a
    Sa2VA release (``sa2va_eval_swap=True``): that flag was meant as Sa2VA's decode, which is the
    best-IoU mask of tokens 1-3 (``'best_iou'``).
    """
    if "mask_token" in grounding:
        return grounding
    grounding = dict(grounding)
    swap = grounding.pop("sa2va_eval_swap", False)
    grounding["mask_token"] = "best_iou" if swap is True else "first"
    return grounding




def resolve_device_dtype(device: str | torch.device | None, dtype: str | torch.dtype | None):
    """Defaults: CUDA when available, else CPU; bfloat16 on CUDA, float32 on CPU."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    return device, dtype


def _build_state(config: SALMAConfig, tokenizer, cls) -> dict[str, torch.Tensor]:
    model = build_exported_model(config, tokenizer)
    return cls(model, config, build_exported_tracker(config, model)).state_to_save()


class SALMAModel(nn.Module):
    """The exported SALMA model: ``VideoLLaVASAMModel`` + video tracker + the readers' preprocessing.

    Args:
        model: the LoRA-free (merged) ``VideoLLaVASAMModel``.
        config: its :class:`SALMAConfig`.
        tracker: SAM-2 memory tracker sharing the model's runner (``propagation='memory'``).
    """

    def __init__(self, model: VideoLLaVASAMModel, config: SALMAConfig,
                 tracker: SAM2MemoryTracker | None = None) -> None:
        super().__init__()
        if config.video["propagation"] == "memory" and tracker is None:
            raise ValueError("video propagation 'memory' needs the SAM-2 memory tracker")
        self.model = model
        self.tracker = tracker
        self.config = config
        self.reader = InferenceReader(tokenizer=model.tokenizer, num_frames=config.video["num_llm_frames"],
                                      frame_sampling=config.video["llm_frame_sampling"], **config.inputs)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _apply(self, fn, recurse: bool = True):
        """Moves / casts as usual, then points mmengine's data preprocessor at the new device (only
        ``BaseModel.to`` tells it, and a parent's ``.to()`` never calls that)."""
        super()._apply(fn, recurse)
        self.model.data_preprocessor.to(self.device)
        return self

    # ------------------------------------------------------------------ weights
    def state_to_save(self) -> dict[str, torch.Tensor]:
        """Every tensor once: the model's state under its own names (a tied weight under its first
        name) and the tracker's own tensors (not the runner's) under ``tracker.``."""
        state, seen = {}, set()
        for key, tensor in self.model.state_dict(keep_vars=True).items():
            if id(tensor) not in seen:
                seen.add(id(tensor))
                state[key] = tensor
        if self.tracker is not None:
            state.update({TRACKER_PREFIX + k: v for k, v in self.tracker.own_state_dict().items()})
        return state

    def save_pretrained(self, folder: str, *, dtype: str | torch.dtype | None = None) -> None:
        """Write config.json, model.safetensors (floating tensors cast to ``dtype`` if given) and the
        tokenizer with its chat template."""
        os.makedirs(folder, exist_ok=True)
        cast = DTYPES[dtype] if isinstance(dtype, str) else dtype
        state = {}
        for key, tensor in self.state_to_save().items():
            tensor = tensor.detach()
            if cast is not None and tensor.is_floating_point():
                tensor = tensor.to(cast)
            state[key] = tensor.contiguous().cpu()
        weights_path = os.path.join(folder, WEIGHTS_NAME)
        with atomic_path(weights_path) as tmp:  # a kill leaves the previous export, whole
            save_file(state, tmp, metadata={"format": "pt"})
        self.config.save(folder, weights=weights_record(weights_path))
        self.tokenizer.chat_template = jinja_chat_template(self.config.inputs["system"])
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder: str, *, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, verify_weights: bool = True) -> SALMAModel:
        """Rebuild from ``folder``; every weight must be there and nothing else (an error names the
        missing / unexpected keys), and ``model.safetensors`` must have the size and hash recorded at
        export (``verify_weights=False`` skips that check). Defaults: CUDA if available, bfloat16
        there, float32 on CPU. A published Sa2VA folder gives the Sa2VA baseline
        (:func:`load_sa2va_release`; its weights carry no SALMA hash)."""
        if is_sa2va_folder(folder):
            return load_sa2va_release(folder, device=device, dtype=dtype)
        device, dtype = resolve_device_dtype(device, dtype)
        raw = read_config(folder)
        config_path = os.path.join(folder, CONFIG_NAME)
        config = SALMAConfig.from_dict(raw, source=config_path)
        weights_path = os.path.join(folder, WEIGHTS_NAME)
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME}")
        if os.path.getsize(weights_path) == 0:
            raise ValueError(f"{weights_path}: empty file (0 bytes); copy or export it again")
        regular_file(weights_path, what="weight file")
        tokenizer = build_tokenizer(dict(type="load_pretrained_tokenizer", path=folder))
        with no_init_weights():  # the config's sizes against the file's, before anything is allocated
            check_shapes_before_building(lambda: _build_state(config, tokenizer, cls), weights_path,
                                         config_path=config_path)
        with no_init_weights():  # every weight is loaded below: skip the random initialisation
            model = build_exported_model(config, tokenizer)
            salma = cls(model, config, build_exported_tracker(config, model))
        try:
            state = load_file(weights_path)
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{weights_path}: not a readable safetensors file ({err}); it is truncated or damaged: "
                             f"copy or export it again") from err
        targets = salma.state_to_save()
        check_state_dict(state, targets, source=weights_path)
        if verify_weights:  # after the key check, which names a missing / extra tensor more precisely
            check_weights_file(weights_path, raw.get(WEIGHTS_KEY), config_path=config_path)
        with torch.no_grad():
            for key, target in targets.items():
                target.copy_(state[key])
        return salma.to(device=device, dtype=dtype).eval()

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(
        self,
        *,
        image: ImageInput | None = None,
        video: Sequence[ImageInput] | VideoFrames | str | os.PathLike | None = None,
        text: str | Sequence[str],
        regions: Sequence[RegionInput] | None = None,
        max_new_tokens: int | None = None,
        template: bool = True,
        progress: bool = False,
        history: Sequence[tuple[str, str]] = (),
        stream: bool = False,
    ) -> dict | list[dict] | VideoPrediction:
        """Answer ``text`` about ``image`` or ``video`` and segment every generated ``[SEG]``.

        Args:
            image: PIL image, path or uint8 array (H, W, 3).
            video: frames (PIL images, paths or arrays), a folder of frames, or a video file (read
                a frame at a time when needed: only the LLM's frames up front, the rest while
                SAM-2 tracks).
            text: a referring expression (asked with the evaluation's question template), or
                several (one answer each, the frames encoded once). With ``regions``: a question
                about them, naming them ``region1``, ``region2``, ... (sent verbatim).
            regions: image only: visual prompts, each a mask (bool / uint8 array (H, W), PIL image
                or PNG path) or a box ``(x0, y0, x1, y1)`` in pixels; given to the LLM as the
                vision tokens under them (Sa2VA's ``<vp>``), in order: region1, region2, ...
            max_new_tokens: generation budget (default: the export's).
            template: False sends ``text`` verbatim as the question.
            progress: show a progress bar over a video's frames.
            stream: video only: return a :class:`VideoPrediction` at once (answers generated),
                whose iteration yields ``(frame_index, masks)`` frame by frame as SAM-2 tracks:
                ``masks`` bool (n_seg, H, W) for one text, a list of them for several. Frames
                come in tracking order (from the first LLM frame to the end, then backwards to
                frame 0), each once; ``len()`` is the number of frames (a progress bar's total).
                Memory stays that of a few frames whatever the video's length; without
                ``stream`` every mask is gathered in memory (short videos).
            history: earlier (question, answer) turns of a chat about the same image / video, asked
                before ``text`` (one text, verbatim: ``template=False`` or regions).
        Returns:
            per text: ``text`` (the answer), ``question`` (the question asked, without the image
            tokens), ``masks`` bool at the original resolution, one per ``[SEG]``: image
            (n_seg, H, W); video (n_seg, T, H, W) on every frame, and ``llm_frames`` (the frames
            the LLM saw). A dict for one text, a list for several. With ``stream``: a
            :class:`VideoPrediction` whose ``answers`` are these without ``masks`` (with
            ``n_seg``).

        Example (a long video, masks written as they come)::

            pred = model.predict(video="clip.mp4", text="the dog", stream=True)
            print(pred.answers["text"])
            for t, masks in tqdm(pred, total=len(pred)):
                save(pred.frame_names[t], masks)  # masks: (n_seg, H, W)
        """
        if (image is None) == (video is None):
            raise ValueError("give exactly one of image= or video=")
        if regions and image is None:
            raise ValueError("regions are given with an image (visual prompts index an image's last tile)")
        if stream and video is None:
            raise ValueError("stream=True is for videos (an image's masks come at once)")
        texts = [text] if isinstance(text, str) else list(text)
        budget = self.config.max_new_tokens if max_new_tokens is None else max_new_tokens
        if image is not None:
            outputs = self._predict_image(image, texts, budget, template, regions, history)
            return outputs[0] if isinstance(text, str) else outputs
        frames = open_video(video) if isinstance(video, (str, os.PathLike)) else video
        prediction = self._predict_video(frames, texts, budget, template, progress, history,
                                         single=isinstance(text, str))
        if stream:
            return prediction
        outputs = prediction.collect()  # masks (n_seg, T, H, W) per text
        return outputs[0] if isinstance(text, str) else outputs

    def _batch(self, rows: list[dict]) -> dict:
        return self.model.data_preprocessor(salma_collate(rows), False)["data"]

    def _predict_image(self, image, texts, max_new_tokens, template, regions=None, history=()) -> list[dict]:
        """As the RES evaluation: one generation prompt per text, the image's tiles and SAM-2 input
        (with regions: their ``prompt_masks`` on every row)."""
        item = self.reader.image_item(image, texts, template=template, regions=regions, history=history)
        frames = item["g_pixel_values"].to(self.device, self.dtype)  # (1, 3, G, G): one copy for all rows
        rows = [{**row, "g_pixel_values": frames} for row in expand_eval_sample(item)]
        outputs = self.model.predict(self._batch(rows), max_new_tokens)
        return [{"text": o["text"], "question": q, "masks": o["masks"][:, 0]}  # (n_seg, H, W)
                for o, q in zip(outputs, item["meta"]["questions"])]

    def _predict_video(self, frames, texts, max_new_tokens, template, progress, history, single) -> VideoPrediction:
        """As the Ref-VOS evaluation: the LLM's K frames decoded with the language, the config's
        propagation ('memory': SAM-2 tracks them to every frame; 'decode_all') for the rest,
        frame by frame."""
        item = self.reader.video_item(frames, texts, template=template, history=history)
        llm_frames = list(item["meta"]["frame_indices"])  # (K,)
        llm_pixels = item["g_pixel_values"].to(self.device, self.dtype)  # (K, 3, G, G): one copy for all rows
        rows = [{**row, "g_pixel_values": llm_pixels} for row in expand_eval_sample(item)]
        predictor = VideoPredictor(self.model, propagation=self.config.video["propagation"], tracker=self.tracker,
                                   max_new_tokens=max_new_tokens, track_all_seg=True, progress=progress,
                                   llm_frame_masks=self.config.video.get("llm_frame_masks", "language"))
        stream = predictor.stream(self._batch(rows), item["sam_frames"], llm_frames, tuple(item["meta"]["orig_size"]))
        answers = [{"text": a["text"], "question": q, "n_seg": a["n_seg"], "llm_frames": llm_frames}
                   for a, q in zip(stream.answers, item["meta"]["questions"])]
        return VideoPrediction(stream, answers, item["meta"]["frame_names"], single=single)


class VideoPrediction:
    """A video's answers, and its masks frame by frame (``SALMAModel.predict(video=..., stream=True)``).

    Attributes:
        answers: per text ``text``, ``question``, ``n_seg`` and ``llm_frames`` (a dict for one
            text, a list for several, as ``predict`` returns).
        frame_names: one per frame (the folder's file stems, or 00000, 00001, ...).
        size: (H, W) of the masks.
    Iterating yields ``(frame_index, masks)`` once per frame, in tracking order: ``masks`` bool
    (n_seg, H, W) on the CPU for one text, a list of them for several. ``len()``: the frames.
    """

    def __init__(self, stream: VideoStream, answers: list[dict], frame_names: Sequence[str], *, single: bool) -> None:
        self.stream = stream
        self.frame_names = list(frame_names)
        self.size = stream.size
        self.single = single
        self.answers = answers[0] if single else answers

    def collect(self) -> list[dict]:
        """Every text's answer with ``masks`` bool (n_seg, T, H, W) on every frame (short videos)."""
        answers = [self.answers] if self.single else self.answers
        return [{**{k: a[k] for k in ("text", "question", "llm_frames")}, "masks": m}
                for a, m in zip(answers, self.stream.collect())]

    def __len__(self) -> int:
        return self.stream.n_frames

    def __iter__(self):
        for t, masks in self.stream:
            yield t, (masks[0] if self.single else masks)


def as_salma_model(cfg: Config, model, *, source: dict | None = None) -> SALMAModel:
    """The exported form of a built (and loaded) ``model``: LoRA merged in place, the evaluation's
    tracker, the config recording architecture, reader settings and video options."""
    model_cfg = plain(cfg.model)
    grounding = model_cfg["grounding_encoder"]
    options = EvalOptions.from_config(cfg).updated({"tracker_offload": False})  # an export keeps no offload setting
    merged = merge_lora(model.mllm.language_model)
    tracker = tracker_for(model, model_cfg, options)
    family = {"internvl" if model.mllm.vision_family == "internvl" else "qwen_vl": model.mllm.model.config.to_dict()}
    inputs = reader_settings(cfg, model, sam_pixel_stats=options.sam_pixel_stats)
    if inputs.get("vision") is None:  # InternVL: the tiling keys are the whole story
        inputs.pop("vision", None)
    config = SALMAConfig(
        **family,
        sam2=model.grounding_encoder.sam2.config.to_dict(),
        grounding={**{k: grounding[k] for k in ("enable_cma", "cma", "mask_source") if k in grounding},
                   "mask_token": model.grounding_encoder.mask_token},
        max_expr_tokens=model.max_expr_tokens,
        inputs=inputs,
        video={k: getattr(options, k) for k in VIDEO_KEYS},
        tracker=None if tracker is None else tracker.video.config.to_dict(),
        max_new_tokens=int(options.max_new_tokens),
        source={**(source or {}), "config": cfg.filename, "lora_merged_layers": len(merged),
                "sam2_memory": options.sam2_memory if tracker is not None else None},
    )
    return SALMAModel(model, config, tracker)


def load_sa2va_release(folder: str | os.PathLike, *, device: str | torch.device | None = None,
                       dtype: str | torch.dtype | None = None) -> SALMAModel:
    """The Sa2VA baseline of a release folder as an exported :class:`SALMAModel` (defaults as
    ``SALMAModel.from_pretrained``: CUDA + bfloat16 if available, else CPU + float32)."""
    device, dtype = resolve_device_dtype(device, dtype)
    cfg = sa2va_baseline_config(folder, dtype=dtype)
    # Every tensor comes from the folder, strictly checked part by part: skip the random init.
    with no_init_weights():
        model = build_model(cfg, "none", torch.device("cpu"))
        salma = as_salma_model(cfg, model, source={"sa2va_release": str(folder)})
    return salma.to(device=device, dtype=dtype).eval()
