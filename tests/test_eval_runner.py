"""tools/test.py's config contract: which runs a config and command line select, and the checks
on test_datasets / test_options."""
import pytest
from mmengine.config import Config

from projects.salma.evaluation.runner import DEFAULT_OPTIONS, resolve_runs

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
    assert runs["refcocog"].options == {**DEFAULT_OPTIONS, "num_llm_frames": 8, "lenient": False}
    assert runs["mevis/valid_u"].options["propagation"] == "decode_all"
    assert runs["refcoco/val"].options["propagation"] == "memory"


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
    return NS(mllm=NS(model=NS(config=config)), grounding_encoder=NS(image_size=128))


def test_readers_get_eval_mode_the_model_sizes_and_the_llm_frames():
    from projects.salma.evaluation.runner import complete_dataset_cfg

    model_cfg = dict(mllm=dict(tokenizer=dict(type="build_tiny_tokenizer")))
    runs = {r.name: r for r in resolve_runs(cfg())}
    video = complete_dataset_cfg(runs["mevis/valid_u"], model_cfg, _fake_model())
    assert video == dict(type="RefVOSDataset", expression_file="e.json", mask_file="m.json", mode="eval",
                         on_error="raise", tokenizer=model_cfg["mllm"]["tokenizer"], image_size=128,
                         image_seq_length=16, sam_image_size=128, num_frames=8, frame_sampling="first",
                         sam_all_frames=True)
    image = complete_dataset_cfg(runs["refcocog"], model_cfg, _fake_model())
    assert "num_frames" not in image and image["mode"] == "eval"
    for bad, match in ((dict(mode="train"), "mode"), (dict(on_error="skip"), "on_error"),
                       (dict(image_size=448), "image_size"), (dict(sam_image_size=1024), "sam_image_size")):
        run = runs["refcocog"]
        broken = type(run)(run.name, run.task, {**run.dataset, **bad}, run.options)
        with pytest.raises(ValueError, match=match):
            complete_dataset_cfg(broken, model_cfg, _fake_model())
