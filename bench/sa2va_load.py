"""Time and peak memory of ``SALMAModel.from_pretrained`` on a real-size Sa2VA-1B release folder.

The folder is written in Sa2VA's release layout with random weights (``save_sa2va_layout``): the
InternVL2.5-1B architecture (``configs/_base_/models/salma_1b.py``) with Sa2VA's 151679-token
vocabulary, Meta's SAM-2 hiera-large state dict built with the settings Sa2VA's ``sam2.py``
hard-codes (sam2.0 memory modules), ``text_hidden_fcs`` 896 -> 256, bfloat16 safetensors in 2
shards, and a word-level stand-in tokenizer whose special tokens sit at the real ids (``<IMG_CONTEXT>``
151667, ``[SEG]`` 151674). Needs Meta's ``sam2`` package (test extra) to build SAM-2's keys.

The load runs in a fresh subprocess: wall time of ``from_pretrained`` and the process's peak
RSS (``VmHWM``), next to the peak after its imports and the RSS of the loaded model. The folder goes to a temporary directory (or ``--out``) and is deleted afterwards
unless ``--keep``.

    python bench/sa2va_load.py                       # CPU, float32 (from_pretrained's CPU default)
    python bench/sa2va_load.py --dtype bfloat16 --dtype float32
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from mmengine.config import Config
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import InternVLConfig, InternVLForConditionalGeneration, PreTrainedTokenizerFast

from projects.salma.constants import IMG_CONTEXT_TOKEN, SPECIAL_TOKENS
from projects.salma.models.convert.sa2va import save_sa2va_layout
from projects.salma.models.convert.sam2 import SAM2_SIZES

REPO = Path(__file__).resolve().parents[1]
QWEN_REGULAR = 151643  # Qwen2.5's byte-level BPE vocabulary before its special tokens
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *[f"<|special_{i}|>" for i in range(19)]]
INTERNVL_TOKENS = ["<img>", "</img>", IMG_CONTEXT_TOKEN, "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]


def stand_in_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with Sa2VA-1B's token ids: 151643 words, Qwen's 22 specials,
    InternVL's 9 tokens (151665-151673), Sa2VA's 5 (151674-151678)."""
    backend = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(QWEN_REGULAR)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    for group in (QWEN_SPECIAL, INTERNVL_TOKENS, list(SPECIAL_TOKENS)):
        tok.add_tokens(group, special_tokens=True)
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    assert tok.convert_tokens_to_ids(IMG_CONTEXT_TOKEN) == 151667 and tok.convert_tokens_to_ids("[SEG]") == 151674
    return tok


def internvl_1b(vocab: int) -> InternVLForConditionalGeneration:
    arch = Config.fromfile(str(REPO / "configs/_base_/models/salma_1b.py")).internvl2_5_1b_arch.to_dict()
    arch["text_config"]["vocab_size"] = vocab
    arch["vision_config"]["use_mean_pooling"] = True  # InternViT has no final norm (what the converter builds)
    config = InternVLConfig(**arch, image_token_id=151667, template="qwen_chat")
    return InternVLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)


def meta_sam2_as_sa2va() -> dict[str, torch.Tensor]:
    """Meta's SAM2Base with the settings Sa2VA's hf/models/sam2.py hard-codes (hiera-large,
    sam2.0: no occlusion embedding, no temporal projection of object pointers)."""
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
    from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine
    from sam2.modeling.sam.transformer import RoPEAttention
    from sam2.modeling.sam2_base import SAM2Base

    trunk = Hiera(**SAM2_SIZES["large"])
    neck = FpnNeck(position_encoding=PositionEmbeddingSine(num_pos_feats=256, normalize=True, temperature=10000),
                   d_model=256, backbone_channel_list=trunk.channel_list, fpn_top_down_levels=[2, 3],
                   fpn_interp_model="nearest")
    rope = dict(rope_theta=10000.0, feat_sizes=[32, 32], embedding_dim=256, num_heads=1, downsample_rate=1, dropout=0.1)
    layer = MemoryAttentionLayer(
        activation="relu", cross_attention=RoPEAttention(rope_k_repeat=True, kv_in_dim=64, **rope), d_model=256,
        dim_feedforward=2048, dropout=0.1, pos_enc_at_attn=False, pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False, self_attention=RoPEAttention(**rope))
    memory_encoder = MemoryEncoder(
        out_dim=64, position_encoding=PositionEmbeddingSine(num_pos_feats=64, normalize=True, temperature=10000),
        mask_downsampler=MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=Fuser(CXBlock(dim=256, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True), num_layers=2))
    model = SAM2Base(
        image_encoder=ImageEncoder(trunk=trunk, neck=neck, scalp=1),
        memory_attention=MemoryAttention(d_model=256, pos_enc_at_input=True, layer=layer, num_layers=4),
        memory_encoder=memory_encoder, num_maskmem=7, image_size=1024, sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0, use_mask_input_as_output_without_sam=True, directly_add_no_mem_embed=True,
        use_high_res_features_in_sam=True, multimask_output_in_sam=True, iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True, add_tpos_enc_to_obj_ptrs=False, only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True, pred_obj_scores_mlp=True, fixed_no_obj_ptr=True, multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True)
    return model.state_dict()


def write_release(folder: Path) -> None:
    tok = stand_in_tokenizer()
    torch.manual_seed(0)
    internvl = internvl_1b(len(tok))
    fcs = nn.Sequential(nn.Linear(896, 896), nn.ReLU(inplace=True), nn.Linear(896, 256), nn.Dropout(0.0))
    save_sa2va_layout(folder, internvl=internvl, sam2_state_dict=meta_sam2_as_sa2va(), text_hidden_fcs=fcs.state_dict(),
                      tokenizer=tok, num_shards=2, dtype=torch.bfloat16)


# Peak RSS is VmHWM (this address space's high-water mark, reset at exec): ru_maxrss would carry
# the parent's peak across fork + exec, i.e. the writer's.
LOAD = """
import json, time, torch
from projects.salma.salma_model import SALMAModel

def gib(field):
    line = next(l for l in open("/proc/self/status", encoding="utf-8") if l.startswith(field + ":"))
    return int(line.split()[1]) / 2**20

torch.set_num_threads({threads})
before = gib("VmHWM")
start = time.perf_counter()
model = SALMAModel.from_pretrained({folder!r}, device="cpu", dtype={dtype!r})
seconds = time.perf_counter() - start
params = sum(t.numel() for t in model.state_to_save().values())
print(json.dumps(dict(dtype={dtype!r}, seconds=seconds, rss_before_gib=before, peak_rss_gib=gib("VmHWM"),
                      rss_after_gib=gib("VmRSS"), tensors=params, propagation=model.config.video["propagation"],
                      cma=model.model.grounding_encoder.cma is not None)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", action="append", choices=["float32", "bfloat16"], help="repeatable (default float32)")
    parser.add_argument("--out", help="folder to write the release to (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the folder")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="sa2va_1b_"))
    folder = root / "Sa2VA-1B-random"
    try:
        start = time.perf_counter()
        write_release(folder)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**30
        print(f"wrote {folder}: {size:.2f} GiB in {time.perf_counter() - start:.0f} s")
        for dtype in args.dtype or ["float32"]:
            code = LOAD.format(folder=str(folder), dtype=dtype, threads=args.threads)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
            if out.returncode:
                raise RuntimeError(f"loading failed:\n{out.stderr[-3000:]}")
            result = json.loads(next(line for line in reversed(out.stdout.splitlines()) if line.startswith("{")))
            print(f"from_pretrained {dtype}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_gib']:.2f} GiB "
                  f"(after imports {result['rss_before_gib']:.2f}, loaded model {result['rss_after_gib']:.2f} GiB), "
                  f"{result['tensors'] / 1e6:.0f} M values, "
                  f"propagation={result['propagation']}, cma={result['cma']}")
    finally:
        if not args.keep:
            shutil.rmtree(root if not args.out else folder, ignore_errors=True)


if __name__ == "__main__":
    main()
