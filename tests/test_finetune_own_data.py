"""Fine-tuning from an export (``model.pretrained=EXPORT``, models/pretrained.py) and the README's
"Fine-tune on your own data" walkthrough end to end on synthetic raw files: convert -> train a few
iterations from a tiny export -> evaluate -> export -> infer."""
import importlib.util
import json
import os
import time

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from projects.salma.datasets.synthetic_raw import write_own_raw
from projects.salma.build import build_model
from projects.salma.models.pretrained import export_key
from projects.salma.salma_model import SALMAModel
from projects.salma.testing import forced_answer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_CONFIG = os.path.join(ROOT, "configs", "tiny", "salma_tiny_synthetic.py")
FINETUNE = os.path.join(ROOT, "configs", "tiny", "finetune_own_data_tiny.py")


def tool(name):
    spec = importlib.util.spec_from_file_location(f"salma_tool_{name.replace('/', '_')}",
                                                  os.path.join(ROOT, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def start_export(tmp_path_factory):
    """A tiny export with non-trivial LoRA (merged at export) and CMA gain, as a trained model has."""
    tmp = tmp_path_factory.mktemp("start")
    model = build_model(Config.fromfile(START_CONFIG), "none", torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)
    checkpoint = str(tmp / "iter_0.pth")
    torch.save({"state_dict": model.state_dict(), "meta": {"iter": 0}}, checkpoint)
    out = str(tmp / "salma-tiny")
    tool("export").main([START_CONFIG, checkpoint, "--out", out])
    return out


def finetune_cfg(monkeypatch, export, data="unused", **options):
    monkeypatch.setenv("SALMA_PRETRAINED", export)
    monkeypatch.setenv("SALMA_OWN_DATA", data)
    cfg = Config.fromfile(FINETUNE)
    cfg.merge_from_dict(options)
    return cfg


def test_training_from_an_export_starts_with_the_exported_weights_and_fresh_lora(start_export, monkeypatch):
    model = build_model(finetune_cfg(monkeypatch, start_export), "none", torch.device("cpu"))
    exported = SALMAModel.from_pretrained(start_export, device="cpu").model.state_dict()
    own = {export_key(k): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert set(own) == set(exported)
    for key, value in exported.items():
        if key != "aux_loss_scale":  # the warm-up's state, set by its hook
            assert torch.equal(own[key], value), key
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.requires_grad and not p.any() for p in lora_b)  # B = 0: step 0 is the export
    assert model.grounding_encoder.cma.gamma_attn.item() == 0.5  # trained CMA kept, not reset


def test_a_config_that_does_not_build_the_export_is_named(start_export, monkeypatch):
    cfg = finetune_cfg(monkeypatch, start_export, **{"model.grounding_encoder.enable_cma": False,
                                                     "model.grounding_encoder.mask_source": "none"})
    with pytest.raises(ValueError, match=r"unexpected grounding_encoder\.cma\."):
        build_model(cfg, "none", torch.device("cpu"))
    cfg = finetune_cfg(monkeypatch, start_export,
                       **{"model.mllm.tokenizer": dict(_delete_=True, type="build_tiny_tokenizer", vocab_size=400)})
    with pytest.raises(ValueError, match="the config's tokenizer is not the export's"):
        build_model(cfg, "none", torch.device("cpu"))


@pytest.mark.slow
def test_readme_walkthrough_convert_train_evaluate_export_infer(start_export, tmp_path, monkeypatch, capsys):
    times, start = {}, time.perf_counter()
    annotations = write_own_raw(str(tmp_path))
    data = str(tmp_path / "my_data")
    report = tool("data/convert_own_data").main(["--annotations", annotations, "--out", data])
    times["convert"] = time.perf_counter() - start
    items = json.load(open(annotations))["items"]
    val_images = [i for i in items if "image" in i and i.get("split") == "val"]
    val_videos = [i for i in items if "image" not in i and i.get("split") == "val"]
    assert report["res"]["val"]["sentences"] == sum(len(o["sentences"]) for i in val_images for o in i["objects"])

    monkeypatch.setenv("SALMA_PRETRAINED", start_export)
    monkeypatch.setenv("SALMA_OWN_DATA", data)
    work = str(tmp_path / "work")
    runner = tool("train").main([FINETUNE, "--work-dir", work])
    times["train"] = time.perf_counter() - start - sum(times.values())
    checkpoint = os.path.join(work, "iter_4.pth")
    assert runner.iter == 4 and os.path.isfile(checkpoint)
    trained = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert any(v.any() for k, v in trained.items() if "lora_B" in k)  # LoRA trained on the new set

    summary = tool("test").main([FINETUNE, "--checkpoint", checkpoint, "--work-dir", str(tmp_path / "eval")])
    times["evaluate"] = time.perf_counter() - start - sum(times.values())
    res, vos = summary["own_images/val"]["metrics"], summary["own_videos"]["metrics"]
    assert res["n_sentences"] == report["res"]["val"]["sentences"] and res["n_images"] == len(val_images)
    assert vos["n"] == sum(len(o["sentences"]) for i in val_videos for o in i["objects"]) == 8
    assert 0.0 <= res["cIoU"] <= 100.0 and 0.0 <= vos["J&F"] <= 100.0

    exported = str(tmp_path / "exports" / "mine")
    tool("export").main([FINETUNE, checkpoint, "--out", exported])
    times["export"] = time.perf_counter() - start - sum(times.values())
    image = os.path.join(os.path.dirname(annotations), val_images[0]["image"])
    with forced_answer("Sure, [SEG]."):  # the 4-iteration tiny model rarely emits [SEG] on its own
        result = tool("infer").main(["--model", exported, "--image", image, "--text",
                                     val_images[0]["objects"][0]["sentences"][0], "--out", str(tmp_path / "out"),
                                     "--device", "cpu"])
    times["infer"] = time.perf_counter() - start - sum(times.values())
    assert result["n_seg"] == 1
    mask = np.asarray(Image.open(tmp_path / "out" / "mask_1.png"))
    assert mask.shape == (96, 128)
    with capsys.disabled():
        print(f"\nwalkthrough: {json.dumps({k: round(v, 1) for k, v in times.items()})} s; "
              f"own_images/val cIoU {res['cIoU']:.2f} gIoU {res['gIoU']:.2f} ({res['n_sentences']} sentences); "
              f"own_videos J&F {vos['J&F']:.2f} ({vos['n']} expressions)")
