"""What each part of one SALMA forward costs: parameters, GFLOPs and latency (``bench/cost_table.py``).

One real forward (loss mode, no gradient) is run with its components' inputs captured; each
component is then replayed alone on exactly those inputs, under torch's ``FlopCounterMode`` (matmul,
convolution and attention FLOPs, 2 per multiply-add; elementwise work is not counted) and timed
(median of ``reps``). The whole forward is measured the same way for SALMA and for the Sa2VA
baseline (the same model object with CMA, the prior pass and the auxiliary losses switched off), so
SALMA's additions can be given as a share of the whole, beside the seed's section 8.2 figures.

Components: InternVL vision tower, projector (pixel shuffle + MLP), LLM prefill (language model and
LM head over the conversation), SAM-2 image encoder, structure-prior pre-pass, CMA, language decode
(SAM-2 decoder with ``[SEG]``, high-resolution convs included), TMC + boundary losses.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..models import llava_sam2
from ..models.grounding import FrameFeatures
from ..registry import MODELS
from ..testing import make_batch, real_size_model_cfg

REAL_SIZE_CONFIG = "configs/_base_/models/salma_1b.py"
TINY_CONFIG = "configs/tiny/salma_tiny.py"

# Seed §8.2 (the original notes): GFLOPs and added latency of SALMA's additions.
SEED_FIGURES = {
    "structure-prior pre-pass": "0.8 GFLOPs, +5 ms",
    "CMA": "0.1 GFLOPs, +2 ms",
    "SALMA additions": "< 1 GFLOP, +7 ms (~0.7 %)",
}
ADDITIONS = ("structure-prior pre-pass", "CMA", "TMC + boundary")


def build_benchmark_model(*, tiny: bool, dtype: str = "float32", config: str | None = None):
    """SALMA-1B at real size with random weights (InternVL in ``dtype``), or the tiny test model."""
    from mmengine.config import Config

    if tiny:
        model_cfg = Config.fromfile(config or TINY_CONFIG).model
        model_cfg.mllm.torch_dtype = dtype
    else:
        model_cfg = real_size_model_cfg(Config.fromfile(config or REAL_SIZE_CONFIG), llm_dtype=dtype)
    return MODELS.build(model_cfg)


def benchmark_batch(model, *, tiny: bool, objects: int = 1, frames: int = 1, dtype: str = "float32") -> dict:
    """A preprocessed loss-mode batch of one sample (``objects`` x ``frames``) at the model's sizes:
    448 px tiles, 1024 px SAM-2 input, 480x640 masks (tiny: 128 px, 48x64)."""
    sizes = (dict(tile_size=128, sam_size=128, mask_size=(48, 64)) if tiny
             else dict(tile_size=448, sam_size=1024, mask_size=(480, 640)))
    batch = make_batch(model, [(objects, frames)], **sizes)
    batch = model.data_preprocessor(dict(data=batch), training=False)["data"]
    if dtype == "bfloat16":
        batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
        batch["g_pixel_values"] = [g.to(torch.bfloat16) for g in batch["g_pixel_values"]]
    return batch


@contextlib.contextmanager
def sa2va_baseline(model) -> Iterator[None]:
    """The same model as Sa2VA: no CMA, no prior pass, no TMC / boundary losses (restored on exit)."""
    runner = model.grounding_encoder
    saved = runner.cma, runner.mask_source, model.loss_tmc_weight, model.loss_boundary_weight
    runner.cma, runner.mask_source, model.loss_tmc_weight, model.loss_boundary_weight = None, "none", 0.0, 0.0
    try:
        yield
    finally:
        runner.cma, runner.mask_source, model.loss_tmc_weight, model.loss_boundary_weight = saved


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, reps: int) -> list[float]:
    """Seconds of ``reps`` calls (after one warm-up), synchronised on CUDA."""
    with torch.no_grad():
        fn()
        out = []
        for _ in range(reps):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            out.append(time.perf_counter() - start)
    return out


# torch's counter knows the CUDA attention kernels only; on CPU, scaled_dot_product_attention runs
# _scaled_dot_product_flash_attention_for_cpu (same arguments, same work): count it with the same formula.
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call (matmuls, convolutions and attention, 2 per multiply-add)."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        fn()
    return int(counter.get_total_flops())


def n_params(*modules: nn.Module | None) -> int:
    seen, total = set(), 0
    for module in modules:
        for p in (module.parameters() if module is not None else ()):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


@dataclass
class Component:
    """A part of the forward replayed alone: ``call`` runs it on its captured inputs."""

    name: str
    call: Callable[[], object]
    params: int
    note: str = ""


@dataclass
class Captured:
    """Inputs of each component in one real forward."""

    calls: dict[str, tuple[tuple, dict]] = field(default_factory=dict)

    def hook(self, name: str) -> Callable:
        def pre_hook(module, args, kwargs):
            self.calls.setdefault(name, (args, kwargs))

        return pre_hook


def capture_forward(model, batch: dict) -> Captured:
    """Run SALMA's forward once (loss mode, no gradient) and keep every component's inputs."""
    cap = Captured()
    mllm = model.mllm.model
    runner = model.grounding_encoder
    modules = {"vision": mllm.model.vision_tower, "projector": mllm.model.multi_modal_projector,
               "llm": mllm.model.language_model, "lm_head": mllm.lm_head, "sam2_encoder": runner.sam2.vision_encoder}
    if runner.cma is not None:
        modules["cma"] = runner.cma
    handles = [m.register_forward_pre_hook(cap.hook(name), with_kwargs=True) for name, m in modules.items()]
    originals = {}

    def wrap(owner, attr: str, name: str):
        original = getattr(owner, attr)
        originals[(owner, attr)] = original

        def wrapper(*args, **kwargs):
            cap.calls.setdefault(name, (args, kwargs))
            return original(*args, **kwargs)

        setattr(owner, attr, wrapper)

    wrap(runner, "structure_prior", "prior")
    wrap(runner, "decode", "decode")
    wrap(model, "_tmc", "tmc")
    wrap(llava_sam2, "boundary_loss", "boundary")
    try:
        with torch.no_grad():
            model(batch, mode="loss")
    finally:
        for h in handles:
            h.remove()
        for (owner, attr), original in originals.items():
            if owner is llava_sam2:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)  # back to the class's method
    return cap


def components(model, cap: Captured) -> list[Component]:
    """The replayable components of a captured forward (those the model ran)."""
    mllm = model.mllm.model
    runner = model.grounding_encoder
    decoder = runner.sam2.mask_decoder
    calls = cap.calls

    def replay(module: Callable, name: str) -> Callable[[], object]:
        args, kwargs = calls[name]
        return lambda: module(*args, **kwargs)

    tiles = calls["vision"][1]["pixel_values"].shape[0]
    out = [
        Component("InternVL vision", replay(mllm.model.vision_tower, "vision"), n_params(mllm.model.vision_tower),
                  f"{tiles} tile(s)"),
        Component("projector", replay(mllm.model.multi_modal_projector, "projector"),
                  n_params(mllm.model.multi_modal_projector)),
    ]
    llm, head = replay(mllm.model.language_model, "llm"), replay(mllm.lm_head, "lm_head")
    embeds = calls["llm"][1].get("inputs_embeds")
    out.append(Component("LLM (prefill)", lambda: (llm(), head()), n_params(mllm.model.language_model, mllm.lm_head),
                         f"{embeds.shape[1]} tokens" if embeds is not None else ""))
    out.append(Component("SAM-2 encoder", replay(runner.sam2.vision_encoder, "sam2_encoder"),
                         n_params(runner.sam2.vision_encoder)))
    features = calls["decode"][0][0]
    if "prior" in calls:
        prior_features = calls["prior"][0][0]  # its high-resolution convs are cached: the language decode pays them
        assert prior_features.decoder_high_res is not None
        out.append(Component("structure-prior pre-pass", lambda: runner.structure_prior(prior_features), 0,
                             f"no own weights (reuses the {n_params(decoder) / 1e6:.1f} M decoder)"))
    if "cma" in calls:
        out.append(Component("CMA", replay(runner.cma, "cma"), n_params(runner.cma)))
    decode_args, decode_kwargs = calls["decode"]
    frame_index, seg = decode_args[1], decode_args[2]
    cma_out = runner.cma(*calls["cma"][0], **calls["cma"][1]) if "cma" in calls else None

    def language_decode():
        """decode() without CMA: high-resolution convs and the decoder with [SEG] (CMA's output given).
        The convs run once per forward (shared with the pre-pass): counted here, with fresh features."""
        embeddings = cma_out if cma_out is not None else features.image_embeddings[frame_index]
        fresh = FrameFeatures(features.image_embeddings, features.high_res)
        high_res = [level[frame_index] for level in runner._high_res_for_decoder(fresh)]
        return runner.decode_masks(embeddings, high_res, seg[:, None])

    out.append(Component("language decode", language_decode, n_params(decoder, runner.sam2.prompt_encoder)))
    if "tmc" in calls or "boundary" in calls:
        parts = [replay(model._tmc, "tmc")] if "tmc" in calls else []
        if "boundary" in calls:
            parts.append(replay(llava_sam2.boundary_loss, "boundary"))
        out.append(Component("TMC + boundary", lambda: [p() for p in parts], 0))
    return out


@dataclass
class Row:
    name: str
    params: int | None
    flops: int
    latency: dict[str, float]  # device -> median seconds
    note: str = ""


def measure(model, batch: dict, *, device: torch.device, reps: int = 3) -> list[Row]:
    """Every component, then the SALMA and Sa2VA forwards, on ``device`` (the model and batch must be there)."""
    cap = capture_forward(model, batch)
    rows = []
    for comp in components(model, cap):
        rows.append(Row(comp.name, comp.params, count_flops(comp.call),
                        {device.type: statistics.median(time_call(comp.call, device, reps))}, comp.note))

    def forward():
        return model(batch, mode="loss")

    salma = Row("SALMA forward (loss mode)", n_params(model), count_flops(forward),
                {device.type: statistics.median(time_call(forward, device, reps))})
    with sa2va_baseline(model):
        sa2va = Row("Sa2VA forward (baseline)", n_params(model) - n_params(model.grounding_encoder.cma),
                    count_flops(forward), {device.type: statistics.median(time_call(forward, device, reps))})
    return rows + [salma, sa2va]


def merge_devices(cpu: list[Row], other: list[Row]) -> list[Row]:
    """Rows of a CPU measurement with the latency column of another device's run added."""
    by_name = {r.name: r for r in other}
    return [Row(r.name, r.params, r.flops, {**r.latency, **by_name[r.name].latency}, r.note) for r in cpu]


def additions(rows: list[Row]) -> Row:
    """SALMA's additions (pre-pass + CMA + TMC/boundary) summed."""
    added = [r for r in rows if r.name in ADDITIONS]
    devices = {d for r in added for d in r.latency}
    return Row("SALMA additions", sum(r.params or 0 for r in added), sum(r.flops for r in added),
               {d: sum(r.latency.get(d, 0.0) for r in added) for d in devices})


def format_table(rows: list[Row]) -> str:
    """Markdown: one line per component, the two forwards, SALMA's additions and their share."""
    devices = [d for d in ("cpu", "cuda") if any(d in r.latency for r in rows)]
    head = "| component | params (M) | GFLOPs | " + " | ".join(f"{d.upper()} ms" for d in devices) + \
           " | design target | note |"
    lines = [head, "|" + "---|" * (5 + len(devices))]

    def line(r: Row) -> str:
        params = "-" if r.params is None else f"{r.params / 1e6:.2f}"
        lat = " | ".join(f"{1e3 * r.latency[d]:.1f}" if d in r.latency else "-" for d in devices)
        return f"| {r.name} | {params} | {r.flops / 1e9:.3f} | {lat} | {SEED_FIGURES.get(r.name, '')} | {r.note} |"

    salma = next(r for r in rows if r.name.startswith("SALMA forward"))
    sa2va = next(r for r in rows if r.name.startswith("Sa2VA forward"))
    parts = [r for r in rows if r is not salma and r is not sa2va]
    other = Row("rest of the forward", None, salma.flops - sum(r.flops for r in parts),
                {d: salma.latency[d] - sum(r.latency.get(d, 0.0) for r in parts) for d in devices},
                "SALMA forward minus the parts: embeddings, [SEG] MLP, mask losses, glue")
    lines += [line(r) for r in parts] + [line(other), line(salma), line(sa2va)]
    added = additions(rows)
    share_flops = 100.0 * added.flops / salma.flops
    shares = [f"{1e3 * added.latency[d]:.1f} ({100.0 * added.latency[d] / sa2va.latency[d]:.2f} % of Sa2VA's forward)"
              for d in devices]
    lines.append(f"| **SALMA additions** (pre-pass + CMA + TMC/boundary) | {added.params / 1e6:.2f} | "
                 f"{added.flops / 1e9:.3f} ({share_flops:.2f} % of SALMA's) | " + " | ".join(shares) +
                 f" | {SEED_FIGURES['SALMA additions']} | replayed components, summed |")
    measured = [f"{1e3 * (salma.latency[d] - sa2va.latency[d]):+.1f} ({salma.latency[d] / sa2va.latency[d]:.4f}x)"
                for d in devices]
    lines.append(f"| SALMA - Sa2VA forward (measured) | - | {(salma.flops - sa2va.flops) / 1e9:.3f} | "
                 + " | ".join(measured) + " | | two medians; see bench/mba_overhead.py for a CI |")
    return "\n".join(lines)
