"""tools/test.py's config contract: which runs a config and command line select, and the checks
on test_datasets / test_options."""
import pytest
from mmengine.config import Config

from projects.salma.build import EvalOptions
from projects.salma.evaluation.runner import resolve_runs

ENTRIES = dict(
    refcoco=dict(task="res", dataset=dict(type="RefCOCODataset", data_root="d"),
                 splits=dict(val=dict(split="val"), testA=dict(split="testA"))),
    refcocog=dict(task="res", dataset=dict(type="RefCOCODataset", split="val"), lenient=False),
    mevis=dict(task="ref_vos", dataset=dict(type="RefVOSDataset", expression_file="e.json"),
               splits=dict(valid_u=dict(mask_file="m.json"), valid=dict(mask_file=None)), propagation="decode_all"),
)


def cfg(**extra):
    return Config(dict(test_datasets=ENTRIES, test_options=dict(num_llm_frames=8), **extra))


def test_all_runs_with_options_layered():
    runs = {r.name: r for r in resolve_runs(cfg())}
    assert list(runs) == ["refcoco/val", "refcoco/testA", "refcocog", "mevis/valid_u", "mevis/valid"]
    assert runs["refcoco/testA"].dataset == dict(type="RefCOCODataset", data_root="d", split="testA")
    assert runs["mevis/valid"].dataset["mask_file"] is None
    assert runs["refcocog"].options == EvalOptions(num_llm_frames=8, lenient=False)
    assert runs["mevis/valid_u"].options.propagation == "decode_all"
    assert runs["refcoco/val"].options.propagation == "memory"


def test_dataset_and_split_selection():
    assert [r.name for r in resolve_runs(cfg(), ["mevis"], "valid")] == ["mevis/valid"]
    assert [r.name for r in resolve_runs(cfg(), ["refcocog"], "test")] == ["refcocog/test"]
    assert resolve_runs(cfg(), ["refcocog"], "test")[0].dataset["split"] == "test"
    with pytest.raises(ValueError, match="splits"):
        resolve_runs(cfg(), ["refcoco"], "test")
    with pytest.raises(ValueError, match="not in test_datasets"):
        resolve_runs(cfg(), ["ytvos"])


@pytest.mark.parametrize("bad, match", [
    (dict(test_datasets=dict(x=dict(task="vqa", dataset={}))), "task"),
    (dict(test_datasets=dict(x=dict(task="res"))), "dataset"),
    (dict(test_datasets=dict(x=dict(task="res", dataset={}, propogation="memory"))), "unknown keys"),
    (dict(test_datasets=ENTRIES, test_options=dict(num_frames=5)), "test_options"),
    (dict(), "test_datasets"),
])
def test_config_mistakes_fail_loudly(bad, match):
    with pytest.raises(ValueError, match=match):
        resolve_runs(Config(bad))


def test_video_entry_without_splits_rejects_a_split():
    with pytest.raises(ValueError, match="no 'splits'"):
        resolve_runs(Config(dict(test_datasets=dict(v=dict(task="ref_vos", dataset={})))), split="valid")


def _fake_model():
    from types import SimpleNamespace as NS

    config = NS(vision_config=NS(image_size=[128, 128]), image_seq_length=16)
    return NS(mllm=NS(model=NS(config=config), vision_family="internvl"), grounding_encoder=NS(image_size=128))


def test_readers_get_eval_mode_the_model_sizes_and_the_llm_frames():
    from projects.salma.evaluation.runner import complete_dataset_cfg

    model_cfg = dict(mllm=dict(tokenizer=dict(type="build_tiny_tokenizer")))
    runs = {r.name: r for r in resolve_runs(cfg())}
    video = complete_dataset_cfg(runs["mevis/valid_u"], model_cfg, _fake_model())
    assert video == dict(type="RefVOSDataset", expression_file="e.json", mask_file="m.json", mode="eval",
                         on_error="raise", tokenizer=model_cfg["mllm"]["tokenizer"], image_size=128,
                         image_seq_length=16, sam_image_size=128, num_frames=8, frame_sampling="first",
                         stream_frames=True, sam_all_frames=False)
    image = complete_dataset_cfg(runs["refcocog"], model_cfg, _fake_model())
    assert "num_frames" not in image and image["mode"] == "eval"
    for bad, match in ((dict(mode="train"), "mode"), (dict(on_error="skip"), "on_error"),
                       (dict(image_size=448), "image_size"), (dict(sam_image_size=1024), "sam_image_size")):
        run = runs["refcocog"]
        broken = type(run)(run.name, run.task, {**run.dataset, **bad}, run.options)
        with pytest.raises(ValueError, match=match):
            complete_dataset_cfg(broken, model_cfg, _fake_model())


def test_sam_pixel_stats_option_reaches_every_reader():
    """test_options.sam_pixel_stats (a published Sa2VA scored as its HF code runs it) is every
    reader's; unset, the readers keep their own (ImageNet statistics)."""
    from projects.salma.evaluation.runner import complete_dataset_cfg

    model_cfg = dict(mllm=dict(tokenizer=dict(type="build_tiny_tokenizer")))
    for name in ("mevis/valid_u", "refcocog"):
        plain = {r.name: r for r in resolve_runs(cfg())}[name]
        assert "sam_pixel_stats" not in complete_dataset_cfg(plain, model_cfg, _fake_model())
        options = dict(num_llm_frames=8, sam_pixel_stats="sa2va_release")
        release = {r.name: r for r in resolve_runs(Config(dict(test_datasets=ENTRIES, test_options=options)))}[name]
        assert complete_dataset_cfg(release, model_cfg, _fake_model())["sam_pixel_stats"] == "sa2va_release"


def test_checkpoint_without_cma_weights_is_refused_unless_allowed(tmp_path, monkeypatch):
    """A checkpoint lacking trained tensors (here CMA: gamma stays 0, i.e. a Sa2VA) must not be
    evaluated silently; tools/test.py --allow-missing-weights is the deliberate way."""
    import importlib.util
    import os

    import torch

    from projects.salma.evaluation import runner

    cfg = Config.fromfile("configs/tiny/salma_tiny.py")
    model = runner.build_model(cfg, "none", torch.device("cpu"))
    state = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad and ".cma." not in n}
    torch.save({"state_dict": state, "meta": {"iter": 1}}, tmp_path / "iter_1.pth")
    with pytest.raises(ValueError, match=r"trainable tensors are not in the checkpoint.*grounding_encoder\.cma\."):
        runner.build_model(cfg, str(tmp_path / "iter_1.pth"), torch.device("cpu"))
    allowed = runner.build_model(cfg, str(tmp_path / "iter_1.pth"), torch.device("cpu"), allow_missing_weights=True)
    assert allowed.grounding_encoder.cma.gamma_attn.item() == 0.0

    spec = importlib.util.spec_from_file_location("salma_test_tool", os.path.join("tools", "test.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    calls = []
    monkeypatch.setattr(tool, "run_evaluation", lambda cfg, **kwargs: calls.append(kwargs))
    args = ["configs/tiny/salma_tiny.py", "--checkpoint", str(tmp_path / "iter_1.pth"), "--work-dir", str(tmp_path)]
    tool.main(args)
    tool.main(args + ["--allow-missing-weights"])
    assert [c["allow_missing_weights"] for c in calls] == [False, True]
