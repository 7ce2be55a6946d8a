"""Export and inference: a tiny trained checkpoint (random weights, LoRA B made non-zero, CMA
switched on) -> tools/export.py -> SALMAModel.from_pretrained. The folder round-trips every weight,
merged LoRA equals unmerged LoRA, predict equals the evaluation on the training-side model,
tools/infer.py writes predict's masks, and bad folders fail naming the keys. Where masks are compared,
the real generation is steered to answer with [SEG] (``forced_answer``) and the masks are checked to
be non-trivial first."""
import contextlib
import copy
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image
from safetensors.torch import load_file, save_file

from projects.salma.datasets.chat import build_prompt
from projects.salma.datasets.collate import expand_eval_sample, salma_collate
from projects.salma.datasets.errors import DataError
from projects.salma.datasets.inference import InferenceReader, read_video
from projects.salma.datasets.masks import decode_rle
from projects.salma.datasets.templates import image_token_string, video_token_string
from projects.salma.evaluation.ref_vos import RefVOSEvaluator
from projects.salma.evaluation.res import RESEvaluator
from projects.salma.evaluation.visualize import display_scale
from projects.salma.build import EvalOptions, build_model, reader_settings, tracker_for, trained_otherwise
from projects.salma.export import export_model
from projects.salma.models.export_checks import VIDEO_KEYS
from projects.salma.models.convert.common import CheckpointMismatchError
from projects.salma.salma_model import SALMAModel, resolve_device_dtype
from projects.salma.models.video import SAM2MemoryTracker, VideoPredictor
from projects.salma.registry import DATASETS
from projects.salma.testing import assert_nontrivial_masks, forced_answer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny", "salma_tiny.py")
LLM_FRAMES = 3
# Reader settings of the evaluation (image sizes tied to salma_tiny.py; at least 2 tiles, so tiling matters).
READER = dict(tokenizer=dict(type="build_tiny_tokenizer"), image_size=128, image_seq_length=16, min_dynamic_patch=2,
              max_dynamic_patch=4, sam_image_size=128, max_length=2048)


def tracker_shares_the_decoder(model: SALMAModel) -> bool:
    """The tracker holds the runner's tensors (one copy: the fine-tuned decoder tracks), as in evaluation."""
    runner = model.model.grounding_encoder
    return model.tracker.video.mask_decoder.iou_token.weight is runner.sam2.mask_decoder.iou_token.weight


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"salma_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def export_data_cfgs(synthetic_data):
    """Evaluation readers of the export tests (named apart from conftest's data_cfgs, so other suites
    can import these fixtures)."""
    r = synthetic_data
    return {
        "refcoco": dict(type="RefCOCODataset", data_root=r["refcoco"], image_folder=r["refcoco_images"], split="val",
                        mode="eval", **READER),
        "mevis": dict(type="RefVOSDataset", data_root=r["mevis_valid_u"], expression_file="meta_expressions.json",
                      image_folder="JPEGImages", mask_file="mask_dict.json", mode="eval", **READER),
    }


@pytest.fixture(scope="module")
def config_path(tmp_path_factory, export_data_cfgs):
    """salma_tiny.py plus the evaluation's readers and options (what an export reads from a config)."""
    test_datasets = {"refcoco": dict(task="res", dataset=export_data_cfgs["refcoco"]),
                     "mevis": dict(task="ref_vos", dataset=export_data_cfgs["mevis"])}
    test_options = dict(num_llm_frames=LLM_FRAMES, max_new_tokens=8)
    path = tmp_path_factory.mktemp("config") / "salma_tiny_export.py"
    path.write_text(f"_base_ = [{TINY!r}]\ntest_datasets = {test_datasets!r}\ntest_options = {test_options!r}\n")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, config_path):
    """The training-side model with 'trained' weights and its mmengine checkpoint file."""
    model = build_model(Config.fromfile(config_path), "none", torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # zero at init: the merge would be a no-op
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)  # zero at init: CMA would be the identity
    path = str(tmp_path_factory.mktemp("ckpt") / "iter_10.pth")
    torch.save({"state_dict": model.state_dict(), "meta": {"iter": 10}}, path)
    return model.eval(), path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, config_path, trained):
    """(in-memory exported model, its folder), exported with random memory modules (tiny model)."""
    cfg = Config.fromfile(config_path)
    cfg.merge_from_dict({"test_options.sam2_memory": "random"})
    out = str(tmp_path_factory.mktemp("export") / "salma_tiny")
    return export_model(cfg, trained[1], out), out


@pytest.fixture(scope="module")
def loaded(exported):
    return SALMAModel.from_pretrained(exported[1], device="cpu")  # compared with the CPU training-side model


@pytest.fixture
def fake_llm():
    """The real generation, answering 'Sure, [SEG].' (the random tiny LLM rarely emits [SEG])."""
    with forced_answer("Sure, [SEG]."):
        yield


# ------------------------------------------------------------------ the folder
def test_folder_has_weights_config_tokenizer_and_chat_template(exported):
    _, out = exported
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja"} <= set(os.listdir(out))
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["format"] == "salma" and config["max_expr_tokens"] == 16
    assert config["inputs"] == {**{k: v for k, v in READER.items() if k != "tokenizer"}, "use_thumbnail": True,
                                "system": "", "sam_pixel_stats": "imagenet"}
    assert config["video"] == dict(num_llm_frames=LLM_FRAMES, llm_frame_sampling="first", propagation="memory",
                                   tracker_decoder="shared", llm_frame_masks="language")
    assert config["max_new_tokens"] == 8 and config["tracker"]["model_type"] == "sam2_video"
    assert config["grounding"]["mask_source"] == "pred" and config["grounding"]["cma"]["mask_bias_mode"] == "gate"
    assert config["grounding"]["mask_token"] == "best_iou"  # the rule the model trained with, recorded
    assert config["internvl"]["text_config"]["vocab_size"] == 512


def test_every_trained_key_is_exported_with_lora_merged(exported, trained):
    """Nothing dropped: each training key is in the file (LoRA folded into its base weight), values
    unchanged except the merged weights, which are W + (alpha / r) * B @ A; plus the tracker's own."""
    model, _ = trained
    train_state = model.state_dict()
    saved = load_file(os.path.join(exported[1], "model.safetensors"))
    lora = sorted(k for k in train_state if "lora_" in k)
    assert len(lora) == 2 * 2 * 7  # A and B, 2 layers, 7 target modules
    expected = {k.replace(".base_layer.", ".") for k in train_state if "lora_" not in k}
    assert {k for k in saved if not k.startswith("tracker.")} == expected
    tracker_keys = {k[len("tracker."):] for k in saved if k.startswith("tracker.")}
    assert tracker_keys == set(exported[0].tracker.own_state_dict())
    assert any(k.startswith("memory_attention.") for k in tracker_keys)
    assert not any(k.startswith(("vision_encoder.", "mask_decoder.")) for k in tracker_keys)  # shared, saved once
    for key, value in train_state.items():
        if "lora_" not in key and ".base_layer." not in key:
            assert torch.equal(saved[key], value), key
    scaling = 16 / 8  # lora_alpha / r of salma_tiny.py
    for key in (k for k in train_state if k.endswith(".base_layer.weight")):
        prefix = key[: -len("base_layer.weight")]
        delta = scaling * train_state[prefix + "lora_B.default.weight"] @ train_state[prefix + "lora_A.default.weight"]
        merged = saved[key.replace(".base_layer.", ".")]
        assert torch.allclose(merged, train_state[key] + delta, atol=1e-6) and not torch.equal(merged, train_state[key])


def test_from_pretrained_rebuilds_the_exported_model_exactly(exported, loaded):
    model, _ = exported
    ours, theirs = model.state_to_save(), loaded.state_to_save()
    assert set(ours) == set(theirs)
    assert [k for k in ours if not torch.equal(ours[k], theirs[k])] == []
    buffers = dict(model.named_buffers(remove_duplicate=False))  # incl. non-persistent ones, built not loaded
    assert all(torch.equal(b, dict(loaded.named_buffers(remove_duplicate=False))[k]) for k, b in buffers.items())
    assert not any("lora_" in n for n, _ in loaded.named_parameters())
    assert tracker_shares_the_decoder(loaded)


def test_merged_llm_equals_unmerged_llm(trained, loaded):
    model, _ = trained
    ids = model.tokenizer("Please segment the red circle in this image.", return_tensors="pt").input_ids
    mask = torch.ones_like(ids)
    with torch.no_grad():
        unmerged, _ = model.mllm(ids, mask)
        merged, _ = loaded.model.mllm(ids, mask)
    assert torch.allclose(merged, unmerged, atol=1e-5)
    with torch.no_grad():
        plain = copy.deepcopy(model.mllm)
        for name, param in plain.named_parameters():
            if "lora_B" in name:
                param.zero_()
        without, _ = plain(ids, mask)
    assert (without - unmerged).abs().max() > 1e-3  # the adapters matter, so the merge is tested


def test_cli_export_writes_the_same_weights(exported, trained, config_path, tmp_path):
    out = tmp_path / "cli"
    load_tool("export").main([config_path, trained[1], "--out", str(out), "--sam2-memory", "random"])
    ours, theirs = load_file(os.path.join(exported[1], "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    config = json.load(open(os.path.join(exported[1], "config.json")))
    assert json.load(open(out / "config.json"))["inputs"] == config["inputs"]


# ------------------------------------------------------------------ predict = evaluation
def test_inference_reader_builds_the_evaluation_items(loaded, export_data_cfgs):
    reader: InferenceReader = loaded.reader
    refcoco = DATASETS.build(copy.deepcopy(export_data_cfgs["refcoco"]))
    sample = refcoco[0]
    item = reader.image_item(sample["meta"]["image_paths"][0], sample["meta"]["sentences"])
    assert sample["pixel_values"].shape[0] > 1  # several tiles: the tiling settings matter
    _assert_same_rows(expand_eval_sample(item), expand_eval_sample(sample))
    assert item["meta"]["questions"] == sample["meta"]["questions"]

    mevis = DATASETS.build({**export_data_cfgs["mevis"], "num_frames": LLM_FRAMES, "frame_sampling": "first",
                            "stream_frames": True})  # as tools/test.py reads it
    sample = mevis[0]
    item = reader.video_item(sample["meta"]["all_frame_paths"], sample["meta"]["expressions"])
    assert item["meta"]["frame_indices"] == sample["meta"]["frame_indices"]
    _assert_same_rows(expand_eval_sample(item), expand_eval_sample(sample))
    n_frames = len(sample["meta"]["all_frame_paths"])
    assert len(item["sam_frames"]) == len(sample["sam_frames"]) == n_frames
    for t in (0, n_frames // 2, n_frames - 1):  # every frame's SAM-2 input, made when asked, is the reader's
        assert torch.equal(item["sam_frames"][t], sample["sam_frames"][t])


def _assert_same_rows(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        for key in ("input_ids", "expr_ids", "pixel_values", "g_pixel_values"):
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("forced", [False, True], ids=["generated", "seg"])
def test_image_predict_equals_the_res_evaluation(loaded, trained, export_data_cfgs, forced):
    """The exported model's answers and masks are tools/test.py's on the training-side model:
    the free-running answers ('generated', no [SEG] from the random LLM), and answers steered to
    [SEG] ('seg'), whose masks are compared."""
    model, _ = trained
    sample = DATASETS.build(copy.deepcopy(export_data_cfgs["refcoco"]))[1]
    with forced_answer("Sure, [SEG].") if forced else contextlib.nullcontext():
        record = RESEvaluator(max_new_tokens=8).predict_item(model, sample)
        outputs = loaded.predict(image=record["image_path"], text=[s["sentence"] for s in record["sentences"]])
    height, width = record["size"]
    if forced:
        assert all(s["n_seg"] == 1 for s in record["sentences"])
        assert_nontrivial_masks(torch.stack([out["masks"][0] for out in outputs]), "predict masks")
    for s, out in zip(record["sentences"], outputs, strict=True):
        assert out["text"] == s["answer"] and out["question"] == s["question"]
        assert out["masks"].dtype == torch.bool and out["masks"].shape == (s["n_seg"], height, width)
        if s["mask"] is not None:
            assert np.array_equal(out["masks"][0].numpy(), decode_rle(s["mask"], height, width).astype(bool))


def test_video_predict_equals_the_refvos_evaluation(loaded, trained, export_data_cfgs, fake_llm):
    model, _ = trained
    dataset = DATASETS.build({**export_data_cfgs["mevis"], "num_frames": LLM_FRAMES, "frame_sampling": "first",
                              "sam_all_frames": True})
    sample = dataset[0]
    tracker = SAM2MemoryTracker(model.grounding_encoder, memory_weights="random", seed=0)
    record = RefVOSEvaluator(VideoPredictor(model, tracker=tracker, max_new_tokens=8)).predict_item(model, sample)
    height, width = record["size"]
    outputs = loaded.predict(video=record["frame_paths"], text=[e["exp"] for e in record["expressions"]])
    n_frames = len(record["frame_paths"])
    for e, out in zip(record["expressions"], outputs, strict=True):
        assert out["text"] == e["answer"] == "Sure, [SEG]." and out["llm_frames"] == record["llm_frames"]
        assert out["masks"].shape == (1, n_frames, height, width)
        assert_nontrivial_masks(out["masks"], f"{e['exp']!r}: masks on every frame")
        expected = np.stack([decode_rle(m, height, width) for m in e["masks"]]).astype(bool)
        assert np.array_equal(out["masks"][0].numpy(), expected)
    assert outputs[0]["masks"][0, LLM_FRAMES:].any()  # tracked frames carry the object too
    folder = loaded.predict(video=os.path.dirname(record["frame_paths"][0]), text=record["expressions"][0]["exp"])
    assert torch.equal(folder["masks"], outputs[0]["masks"])


def test_video_predict_streams_every_frame_once_with_the_masks_of_the_full_result(loaded, synthetic_data, fake_llm):
    root = os.path.join(synthetic_data["mevis_valid_u"], "JPEGImages")
    folder = os.path.join(root, sorted(os.listdir(root))[0])
    texts = ["the moving circle", "the red square"]
    full = loaded.predict(video=folder, text=texts)  # masks (n_seg, T, H, W) per text
    pred = loaded.predict(video=folder, text=texts, stream=True)
    assert len(pred) == 8 and pred.frame_names == sorted(os.path.splitext(n)[0] for n in os.listdir(folder))
    assert [a["text"] for a in pred.answers] == [o["text"] for o in full] == ["Sure, [SEG]."] * 2
    assert [a["n_seg"] for a in pred.answers] == [1, 1] and pred.answers[0]["llm_frames"] == full[0]["llm_frames"]
    seen = []
    for t, masks in pred:  # one (n_seg, H, W) per text
        seen.append(t)
        for k, m in enumerate(masks):
            assert torch.equal(m, full[k]["masks"][:, t])
    assert seen == list(range(8))  # 'first' LLM frames: SAM-2 tracks forwards from frame 0
    assert_nontrivial_masks(full[0]["masks"], "predict masks")
    t, masks = next(iter(loaded.predict(video=folder, text=texts[0], stream=True)))  # one text: a tensor
    assert t == 0 and torch.equal(masks, full[0]["masks"][:, 0])
    with pytest.raises(ValueError, match="stream=True is for videos"):
        loaded.predict(image=np.zeros((20, 30, 3), np.uint8), text="x", stream=True)


def test_video_file_predict_tracks_backwards_as_on_its_decoded_frames(loaded, synthetic_data, fake_llm, tmp_path,
                                                                      monkeypatch):
    """First LLM frame not 0: SAM-2 tracks back to frame 0, reading the file backwards (seeks)."""
    from projects.salma.datasets.synthetic import write_video_file

    cv2 = pytest.importorskip("cv2")
    root = os.path.join(synthetic_data["mevis_valid_u"], "JPEGImages")
    folder = os.path.join(root, sorted(os.listdir(root))[0])
    images = [Image.open(os.path.join(folder, n)).convert("RGB") for n in sorted(os.listdir(folder))] * 5  # 40 frames
    write_video_file(str(tmp_path / "clip.mp4"), images)
    capture, decoded = cv2.VideoCapture(str(tmp_path / "clip.mp4")), []
    while (frame := capture.read())[0]:
        decoded.append(cv2.cvtColor(frame[1], cv2.COLOR_BGR2RGB))
    monkeypatch.setattr(loaded.reader, "frame_sampling", "random")
    monkeypatch.setattr(loaded.reader, "num_frames", 2)
    from_file = loaded.predict(video=str(tmp_path / "clip.mp4"), text="the moving circle")
    from_frames = loaded.predict(video=decoded, text="the moving circle")
    assert from_file["llm_frames"] == from_frames["llm_frames"] and from_file["llm_frames"][0] > 16
    assert_nontrivial_masks(from_file["masks"][:, : from_file["llm_frames"][0]], "masks tracked backwards")
    assert torch.equal(from_file["masks"], from_frames["masks"])


def test_exported_predict_decodes_as_training_does(loaded, fake_llm, monkeypatch):
    """The exported model in eval mode decodes [SEG] with the mask token it was trained with: the
    same logits as the same model in train mode (no dropout: LoRA merged, CMA dropout 0)."""
    inner = loaded.model
    logits = []
    decode_frames = type(inner).decode_frames

    def recording(self, *args, **kwargs):
        out = decode_frames(self, *args, **kwargs)
        logits.append(out["mask_logits"])
        return out

    monkeypatch.setattr(type(inner), "decode_frames", recording)
    image = np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)
    evaluated = loaded.predict(image=image, text="the circle")
    inner.train()
    trained = loaded.predict(image=image, text="the circle")
    inner.eval()
    assert evaluated["masks"].shape == (1, 40, 52) and evaluated["masks"].any()
    assert len(logits) == 2 and torch.equal(logits[0], logits[1])
    assert torch.equal(evaluated["masks"], trained["masks"])


def test_predict_input_errors(loaded):
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="exactly one of image= or video="):
        loaded.predict(text="x")
    with pytest.raises(ValueError, match=r"may not contain \[SEG\]"):
        loaded.predict(image=image, text="the [SEG] here")
    with pytest.raises(ValueError, match="uint8"):
        loaded.predict(image=image.astype(np.float32), text="x")
    with pytest.raises(DataError, match="no_such.png: image file not found"):
        loaded.predict(image="no_such.png", text="x")
    with pytest.raises(DataError, match="frame 1: size"):
        loaded.predict(video=[image, np.zeros((10, 30, 3), dtype=np.uint8)], text="x")


def test_verbatim_question_is_sent_as_is(loaded):
    out = loaded.predict(image=np.zeros((20, 30, 3), dtype=np.uint8), text="Describe the image.", template=False,
                         max_new_tokens=2)
    assert out["question"] == "Describe the image."
    prompt = loaded.reader.image_item(np.zeros((20, 30, 3), dtype=np.uint8), ["Describe the image."],
                                      template=False)["meta"]["prompts"][0]
    assert (prompt["expr_ids"] == -1).all()  # no expression tokens: CMA attends to [SEG] alone


# ------------------------------------------------------------------ tools/infer.py
def test_infer_tool_writes_predict_masks_for_an_image(loaded, exported, synthetic_data, fake_llm, tmp_path, capsys):
    image = os.path.join(synthetic_data["refcoco_images"], sorted(os.listdir(synthetic_data["refcoco_images"]))[0])
    summary = load_tool("infer").main(["--model", exported[1], "--image", image, "--text", "the red circle",
                                       "--out", str(tmp_path), "--device", "cpu"])
    expected = loaded.predict(image=image, text="the red circle")
    assert_nontrivial_masks(expected["masks"], "predict masks")
    png = np.array(Image.open(tmp_path / "mask_1.png"))
    assert png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
    assert np.array_equal(png > 0, expected["masks"][0].numpy())
    assert summary["masks"] == ["mask_1.png"] and summary["answer"] == "Sure, [SEG]."
    overlay = Image.open(tmp_path / "overlay.png")
    scale = display_scale(*png.shape)  # small images are enlarged for display
    assert overlay.width == png.shape[1] * scale and overlay.height > png.shape[0] * scale  # plus the caption band
    assert "A: Sure, [SEG]." in capsys.readouterr().out


def test_infer_tool_writes_one_png_per_frame_for_a_video(loaded, exported, synthetic_data, fake_llm, tmp_path,
                                                        capsys):
    root = os.path.join(synthetic_data["mevis_valid_u"], "JPEGImages")
    video = os.path.join(root, sorted(os.listdir(root))[0])
    load_tool("infer").main(["--model", exported[1], "--video", video, "--text", "the moving circle",
                             "--out", str(tmp_path), "--device", "cpu", "--offload"])  # on a CPU: the same place
    err = capsys.readouterr().err
    assert "masks: 100%" in err and "8/8" in err  # the progress bar over the frames
    expected = loaded.predict(video=video, text="the moving circle")["masks"][0]  # (T, H, W)
    assert_nontrivial_masks(expected, "predict masks on every frame")
    names = sorted(os.path.splitext(n)[0] for n in os.listdir(video))
    assert sorted(os.listdir(tmp_path / "masks" / "mask_1")) == [f"{n}.png" for n in names]
    for t, name in enumerate(names):
        assert np.array_equal(np.array(Image.open(tmp_path / "masks" / "mask_1" / f"{name}.png")) > 0,
                              expected[t].numpy())
    assert (tmp_path / "overlay.png").is_file() and json.load(open(tmp_path / "result.json"))["n_seg"] == 1


# ------------------------------------------------------------------ visual prompts (regions)
REGION_QUESTION = "What is in region1?"


def _osprey_image(synthetic_data):
    folder = os.path.join(synthetic_data["osprey"], "images", "train2017")
    return os.path.join(folder, sorted(os.listdir(folder))[0])


@pytest.mark.parametrize("forced", [False, True], ids=["generated", "seg"])
def test_region_predict_equals_the_training_side_model(loaded, trained, synthetic_data, forced):
    """A box and a mask as regions: the exported model answers (and segments) exactly as the
    training-side model (LoRA unmerged) on the same rows; the prompt lists the regions' <vp> tokens."""
    with forced_answer("Sure, [SEG].") if forced else contextlib.nullcontext():
        _check_region_predict(loaded, trained, synthetic_data, forced)


def _check_region_predict(loaded, trained, synthetic_data, forced):
    model, _ = trained
    path = _osprey_image(synthetic_data)
    width, height = Image.open(path).size
    mask = np.zeros((height, width), dtype=bool)
    mask[height // 2:, : width // 2] = True  # bottom-left quarter
    box = (width / 2, 0, width, height / 2)  # top-right quarter
    text = "Is <region1> larger than region2?"
    out = loaded.predict(image=path, text=text, regions=[box, mask])

    item = loaded.reader.image_item(path, [text], regions=[box, mask])
    rows = expand_eval_sample(item)
    expected = model.predict(model.data_preprocessor(salma_collate(rows), False)["data"], max_new_tokens=8)[0]
    assert out["text"] == expected["text"] and out["question"] == "Is region1 larger than region2?"
    assert torch.equal(out["masks"], expected["masks"][:, 0])
    if forced:
        assert out["masks"].shape == (1, height, width)
        assert_nontrivial_masks(out["masks"], "region predict masks")
    # The regions on the 4x4 token grid of the thumbnail (last tile): 2x2 cells each, in raster order.
    cells = item["prompt_masks"]
    assert cells.shape == (2, 4, 4) and cells[0, :2, 2:].all() and cells[1, 2:, :2].all() and int(cells.sum()) == 8
    prompt = loaded.tokenizer.decode(rows[0]["input_ids"])
    regions = ", ".join(f"region{k}<vp>{'<IMG_CONTEXT>' * 4}</vp>" for k in (1, 2))
    assert f"</img>\nThere are 2 part regions in the picture: {regions}.\nIs region1 larger than region2?" in prompt
    with torch.no_grad():  # the merged LLM sees the same region tokens as the unmerged one
        batch = salma_collate(rows)["data"]
        args = (batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
        ours, _ = loaded.model.mllm(*args, prompt_masks=batch["prompt_masks"])
        theirs, _ = model.mllm(*args, prompt_masks=batch["prompt_masks"])
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_region_predict_input_errors(loaded, synthetic_data):
    path = _osprey_image(synthetic_data)
    width, height = Image.open(path).size
    with pytest.raises(ValueError, match="names region2 but 1 region was given"):
        loaded.predict(image=path, text="Compare region1 and region2.", regions=[(0, 0, 60, 40)])
    with pytest.raises(ValueError, match=r"region 1: box .* must satisfy 0 <= x0 < x1 <= 128"):
        loaded.predict(image=path, text="What is region1?", regions=[(0, 0, 200, 40)])
    with pytest.raises(ValueError, match=rf"region 1: mask of shape \(10, 10\), the image is \({height}, {width}\)"):
        loaded.predict(image=path, text="What is region1?", regions=[np.ones((10, 10), dtype=bool)])
    with pytest.raises(DataError, match="regions: region1 covers 0 of the 4x4 vision-token cells"):
        loaded.predict(image=path, text="What is region1?", regions=[(1, 1, 5, 5)])
    with pytest.raises(ValueError, match="regions are given with an image"):
        loaded.predict(video=[path, path], text="What is region1?", regions=[(0, 0, 60, 40)])


def test_infer_tool_takes_boxes_and_mask_files(loaded, exported, synthetic_data, tmp_path, capsys):
    path = _osprey_image(synthetic_data)
    width, height = Image.open(path).size
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 2:, : width // 2] = 255
    Image.fromarray(mask).save(tmp_path / "region.png")
    summary = load_tool("infer").main(["--model", exported[1], "--image", path, "--box", f"0,0,{width // 2},{height // 2}",
                                       "--region", str(tmp_path / "region.png"), "--text", REGION_QUESTION,
                                       "--out", str(tmp_path / "out"), "--device", "cpu"])
    expected = loaded.predict(image=path, text=REGION_QUESTION,
                              regions=[(0, 0, width // 2, height // 2), mask > 0])
    assert summary["answer"] == expected["text"] and summary["regions"] == 2
    assert summary["n_seg"] == expected["masks"].shape[0] == expected["text"].count("[SEG]")
    assert f"A: {expected['text']}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        load_tool("infer").main(["--model", exported[1], "--image", path, "--box", "1,2,3", "--text", "x",
                                 "--out", str(tmp_path / "bad")])


def test_video_files_are_read_with_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")  # installed with mmengine
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for t in range(4):
        writer.write(np.full((48, 64, 3), 60 * t, dtype=np.uint8))
    writer.release()
    frames, names = read_video(tmp_path / "clip.mp4")
    assert len(frames) == 4 and frames[0].size == (64, 48) and names == ["00000", "00001", "00002", "00003"]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="notes.txt: not a frame folder or a video file"):
        read_video(tmp_path / "notes.txt")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="broken.mp4: OpenCV decoded no frame"):
        read_video(tmp_path / "broken.mp4")


# ------------------------------------------------------------------ loading: strict, defaults
def _copy_with_weights(src: str, dst, edit) -> str:
    shutil.copytree(src, dst)
    state = load_file(os.path.join(src, "model.safetensors"))
    edit(state)
    save_file(state, os.path.join(dst, "model.safetensors"))
    return str(dst)


def test_missing_key_is_named(exported, tmp_path):
    key = "grounding_encoder.cma.q_proj.weight"
    folder = _copy_with_weights(exported[1], tmp_path / "missing", lambda s: s.pop(key))
    with pytest.raises(CheckpointMismatchError, match=f"1 missing key\\(s\\): {key}"):
        SALMAModel.from_pretrained(folder)


def test_unexpected_key_is_named(exported, tmp_path):
    folder = _copy_with_weights(exported[1], tmp_path / "extra",
                                lambda s: s.update({"text_hidden_fcs.9.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointMismatchError, match="1 unexpected key\\(s\\): text_hidden_fcs.9.weight"):
        SALMAModel.from_pretrained(folder)


def test_shape_mismatch_and_foreign_config_are_errors(exported, tmp_path):
    key = "text_hidden_fcs.0.bias"
    folder = _copy_with_weights(exported[1], tmp_path / "shape", lambda s: s.update({key: torch.zeros(3)}))
    with pytest.raises(ValueError, match=f"{key}: the config makes \\(128,\\), the file holds \\(3,\\)"):
        SALMAModel.from_pretrained(folder)
    config = json.load(open(os.path.join(folder, "config.json")))
    json.dump({**config, "format": "hf"}, open(os.path.join(folder, "config.json"), "w"))
    with pytest.raises(ValueError, match="not a SALMA export"):
        SALMAModel.from_pretrained(folder)


@pytest.mark.parametrize("legacy,rule", [({}, "first"), ({"sa2va_eval_swap": False}, "first"),
                                         ({"sa2va_eval_swap": True}, "best_iou")],
                         ids=["salma_export", "swap_off", "sa2va_release_export"])
def test_exports_from_before_the_decode_rule_keep_the_rule_they_decoded_with(exported, tmp_path, legacy, rule):
    """config.json written before ``mask_token`` existed: a SALMA export decoded (and trained) mask
    token 0; a Sa2VA release export asked for Sa2VA's decode, which is the best-IoU rule. Their
    inputs had no ``sam_pixel_stats`` either (ImageNet statistics)."""
    folder = tmp_path / "legacy"
    shutil.copytree(exported[1], folder)
    config = json.load(open(folder / "config.json"))
    config["grounding"] = {**{k: v for k, v in config["grounding"].items() if k != "mask_token"}, **legacy}
    config["inputs"].pop("sam_pixel_stats")
    json.dump(config, open(folder / "config.json", "w"))
    model = SALMAModel.from_pretrained(str(folder), device="cpu")
    assert model.model.grounding_encoder.mask_token == rule and model.config.grounding["mask_token"] == rule
    assert "sa2va_eval_swap" not in model.config.grounding and model.reader.sam_pixel_stats == "imagenet"


def test_device_and_dtype_defaults(exported, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device_dtype(None, None) == (torch.device("cpu"), torch.float32)
    model = SALMAModel.from_pretrained(exported[1])
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert model.model.data_preprocessor._device == torch.device("cpu")  # batches follow the model
    assert resolve_device_dtype("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_device_dtype("cpu", "int8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_dtype(None, None) == (torch.device("cuda"), torch.bfloat16)
    assert resolve_device_dtype("cuda:1", None) == (torch.device("cuda:1"), torch.bfloat16)
    assert resolve_device_dtype("cuda", "float32") == (torch.device("cuda"), torch.float32)


def test_bfloat16_model_predicts(exported, fake_llm):
    model = SALMAModel.from_pretrained(exported[1], device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert tracker_shares_the_decoder(model)
    out = model.predict(image=np.full((40, 52, 3), 128, dtype=np.uint8), text="the red circle")
    assert out["masks"].shape == (1, 40, 52) and out["masks"].dtype == torch.bool
    assert_nontrivial_masks(out["masks"], "bf16 image masks")
    video = model.predict(video=[np.full((40, 52, 3), 30 * t, dtype=np.uint8) for t in range(5)], text="the circle")
    assert video["masks"].shape == (1, 5, 40, 52)
    assert_nontrivial_masks(video["masks"], "bf16 video masks")


def test_no_hard_coded_cuda():
    for path in ("projects/salma/salma_model.py", "projects/salma/export.py", "projects/salma/inference.py",
                 "projects/salma/datasets/inference.py", "tools/infer.py", "tools/export.py"):
        assert ".cuda(" not in open(os.path.join(ROOT, path)).read(), path


# ------------------------------------------------------------------ export settings and errors
def test_exported_tokenizer_renders_the_training_prompt(loaded):
    question = "<img><IMG_CONTEXT></img>\nPlease segment the red circle in this image."
    rendered = loaded.tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                    add_generation_prompt=True)
    assert rendered == build_prompt(question, system="")
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure, [SEG]."}]
    rendered = loaded.tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."}, *history,
                                                     {"role": "user", "content": question}], tokenize=False,
                                                    add_generation_prompt=True)
    assert rendered == build_prompt(question, system="Be brief.", history=[("Hi", "Sure, [SEG].")])


def test_reader_settings_come_from_the_evaluation_readers_and_must_agree(trained, config_path):
    model, _ = trained
    cfg = Config.fromfile(config_path)
    assert reader_settings(cfg, model)["max_dynamic_patch"] == 4
    cfg.merge_from_dict({"test_datasets.mevis.dataset.max_dynamic_patch": 6})
    with pytest.raises(ValueError, match="readers disagree on max_dynamic_patch: test_datasets.refcoco=4, "
                                         "test_datasets.mevis=6"):
        reader_settings(cfg, model)
    cfg = Config.fromfile(config_path)
    cfg.merge_from_dict({"test_datasets.refcoco.dataset.image_size": 64, "test_datasets.mevis.dataset.image_size": 64})
    with pytest.raises(ValueError, match="image_size=64 but the model expects 128"):
        reader_settings(cfg, model)
    assert reader_settings(Config.fromfile(TINY), model)["max_dynamic_patch"] == 12  # no readers: the defaults


def test_training_readers_that_differ_from_the_exported_settings_are_reported(trained, config_path):
    cfg = Config.fromfile(config_path)
    settings = reader_settings(cfg, trained[0])
    train = [("train_dataloader.dataset.datasets[0]", {**READER, "max_dynamic_patch": 1, "use_thumbnail": False}),
             ("train_dataloader.dataset.datasets[1]", {**READER, "max_dynamic_patch": 1})]
    assert trained_otherwise(settings, train) == ["max_dynamic_patch=4 (trained with 1)"]  # readers split: silent
    assert trained_otherwise(settings, [("t", dict(READER))]) == []


def test_export_needs_memory_weights_for_memory_propagation(trained, config_path, tmp_path):
    model, _ = trained
    cfg = Config.fromfile(config_path)
    with pytest.raises(ValueError, match="--sam2-memory"):
        tracker_for(model, cfg.model.to_dict(), EvalOptions.from_config(cfg))
    cfg.merge_from_dict({"test_options.propagation": "decode_all"})
    assert tracker_for(model, cfg.model.to_dict(), EvalOptions.from_config(cfg)) is None
    assert set(VIDEO_KEYS) <= set(EvalOptions.names())
    cfg.merge_from_dict({"model.grounding_encoder.mask_source": "gt"})
    with pytest.raises(ValueError, match="oracle prior"):
        export_model(cfg, trained[1], str(tmp_path / "gt"))


def test_decode_all_export_has_no_tracker_and_decodes_every_frame(loaded, trained, config_path, tmp_path, fake_llm):
    cfg = Config.fromfile(config_path)
    cfg.merge_from_dict({"test_options.propagation": "decode_all"})
    export_model(cfg, trained[1], str(tmp_path / "decode_all"))
    assert not any(k.startswith("tracker.") for k in load_file(str(tmp_path / "decode_all" / "model.safetensors")))
    model = SALMAModel.from_pretrained(str(tmp_path / "decode_all"), device="cpu")
    assert model.tracker is None
    frames = [np.random.default_rng(t).integers(0, 255, (40, 52, 3), dtype=np.uint8) for t in range(5)]
    out = model.predict(video=frames, text="the circle")
    tracked = loaded.predict(video=frames, text="the circle")
    assert out["masks"].shape == tracked["masks"].shape == (1, 5, 40, 52)
    assert_nontrivial_masks(out["masks"], "decode_all masks")
    assert_nontrivial_masks(tracked["masks"], "tracked masks")
    llm = out["llm_frames"]  # the language decode on the LLM's frames, in both modes
    assert llm == [0, 1, 2] and torch.equal(out["masks"][:, llm], tracked["masks"][:, llm])


def test_checkpoint_missing_trainable_weights_is_an_error(trained, config_path, tmp_path):
    model, _ = trained
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("text_hidden_fcs.")}
    torch.save({"state_dict": state}, tmp_path / "partial.pth")
    cfg = Config.fromfile(config_path)
    cfg.merge_from_dict({"test_options.sam2_memory": "random"})
    with pytest.raises(ValueError, match=r"not in the checkpoint and would stay as initialised.*'text_hidden_fcs.0.bias'"):
        export_model(cfg, str(tmp_path / "partial.pth"), str(tmp_path / "out"))


# ------------------------------------------------------------------ multi-turn chat (tools/app.py)
HISTORY = [("What is in this picture?", "A red circle [SEG] and a blue square."), ("Which is larger?", "The circle.")]


def test_chat_turn_is_asked_after_its_history(loaded, tiny_tokenizer):
    """predict(history=...) asks the question after the earlier turns, as build_prompt renders the
    conversation (the image tokens open its first question); the [SEG] of an earlier answer stays
    in the prompt, and only the new answer's [SEG] is segmented."""
    image = np.random.default_rng(3).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    tiles = loaded.reader.image_inputs(Image.fromarray(image)).pixel_values.shape[0]
    prefix = image_token_string(tiles, loaded.reader.image_seq_length)
    expected = build_prompt("Segment the larger one.", system=loaded.reader.system,
                            history=[(prefix + HISTORY[0][0], HISTORY[0][1]), HISTORY[1]])
    prompts = []

    def answer(prompt):
        prompts.append(prompt)
        return "It is [SEG]."

    with forced_answer(answer):
        out = loaded.predict(image=image, text="Segment the larger one.", history=HISTORY, template=False)
    assert prompts == [expected] and expected.count("[SEG]") == 1
    assert out["text"] == "It is [SEG]." and out["question"] == "Segment the larger one."
    assert out["masks"].shape == (1, 60, 90)
    assert_nontrivial_masks(out["masks"], "chat turn masks")

    frames = [image] * 4
    item = loaded.reader.video_item(frames, ["And now?"], template=False, history=HISTORY)
    prefix = video_token_string(LLM_FRAMES, loaded.reader.image_seq_length)
    expected = build_prompt("And now?", system=loaded.reader.system,
                            history=[(prefix + HISTORY[0][0], HISTORY[0][1]), HISTORY[1]])
    assert loaded.tokenizer.decode(item["meta"]["prompts"][0]["input_ids"]) == expected
    assert (item["meta"]["prompts"][0]["expr_ids"] == -1).all()  # a verbatim question tags no expression


def test_chat_history_needs_one_verbatim_question(loaded):
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="template=False"):
        loaded.predict(image=image, text="the circle", history=HISTORY)
    with pytest.raises(ValueError, match="one text"):
        loaded.predict(image=image, text=["a", "b"], history=HISTORY, template=False)
    with pytest.raises(DataError, match=r"\[SEG\]"):  # a question may not hold [SEG]: only answers do
        loaded.predict(image=image, text="next", history=[("why [SEG]?", "because")], template=False)
