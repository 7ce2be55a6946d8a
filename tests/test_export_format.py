"""The export format is fixed: a folder written by today's code has the tensor names, shapes and
config.json keys that the code before the build path moved (commit 3006523) wrote, and loads into
a model that predicts exactly as the one that was saved."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from safetensors import safe_open

from projects.salma.build import build_model
from projects.salma.constants import SEG_TOKEN
from projects.salma.salma_model import SALMAModel, as_salma_model
from projects.salma.testing import assert_nontrivial_masks, forced_answer

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny", "salma_tiny.py")
# Written by 3006523's export of salma_tiny.py (test_options.sam2_memory='random'): BLAKE2b-128 of the
# sorted (tensor name, shape) pairs of model.safetensors, and the tensor count.
KEYS_DIGEST, N_TENSORS = "6b0656095f921972e79d422dcc37a8d1", 473
CONFIG_KEYS = ["format", "format_version", "grounding", "inputs", "internvl", "max_expr_tokens", "max_new_tokens",
               "sam2", "source", "tracker", "video", "weights"]
VIDEO_KEYS = ["llm_frame_masks", "llm_frame_sampling", "num_llm_frames", "propagation", "tracker_decoder"]
# 3006523's keys plus the two that issue 22 added, both optional when read (an export without them
# loads with 'first' / 'imagenet': test_export.py::test_exports_from_before_the_decode_rule_...)
INPUT_KEYS = ["image_seq_length", "image_size", "max_dynamic_patch", "max_length", "min_dynamic_patch",
              "sam_image_size", "sam_pixel_stats", "system", "use_thumbnail"]
GROUNDING_KEYS = ["cma", "enable_cma", "mask_source", "mask_token"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = Config.fromfile(TINY)
    cfg.merge_from_dict({"test_options": {"sam2_memory": "random"}})
    exported = as_salma_model(cfg, build_model(cfg, "none", torch.device("cpu")))
    folder = str(tmp_path_factory.mktemp("export"))
    exported.save_pretrained(folder)
    return exported, folder


def test_tensor_names_shapes_and_config_keys_are_those_of_the_previous_code(saved):
    _, folder = saved
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        keys = sorted((k, tuple(f.get_slice(k).get_shape())) for k in f.keys())
    assert (hashlib.blake2b(repr(keys).encode(), digest_size=16).hexdigest(), len(keys)) == (KEYS_DIGEST, N_TENSORS)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert (config["format"], config["format_version"]) == ("salma", 1)
    assert (sorted(config), sorted(config["video"]), sorted(config["inputs"])) == (CONFIG_KEYS, VIDEO_KEYS, INPUT_KEYS)
    assert sorted(config["grounding"]) == GROUNDING_KEYS


def test_the_loaded_export_predicts_as_the_saved_model(saved):
    exported, folder = saved
    loaded = SALMAModel.from_pretrained(folder, device="cpu", dtype="float32")
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    with forced_answer(f"It is {SEG_TOKEN}."):
        before = exported.eval().predict(image=image, text="the square", max_new_tokens=8)
        after = loaded.predict(image=image, text="the square", max_new_tokens=8)
    assert before["text"] == after["text"] and SEG_TOKEN in after["text"]
    assert_nontrivial_masks(after["masks"])
    assert torch.equal(torch.as_tensor(before["masks"]), torch.as_tensor(after["masks"]))
