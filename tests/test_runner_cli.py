"""apply_cli's ``deepspeed=`` argument: ``zero2`` is the repository's JSON wherever the job starts;
an explicit path is the user's, relative to the current directory."""
import json
import os.path as osp

import pytest
from mmengine.config import Config

from projects.salma.engine.runner import apply_cli

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def small_cfg():
    return Config(dict(
        train_dataloader=dict(batch_size=2),
        optim_wrapper=dict(type="AmpOptimWrapper", optimizer=dict(type="AdamW", lr=1e-4),
                           clip_grad=dict(max_norm=1.0), accumulative_counts=4),
    ))


def test_zero2_is_found_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    cfg = apply_cli(small_cfg(), work_dir=str(tmp_path), deepspeed="zero2")
    with open(osp.join(REPO, "configs", "deepspeed_zero2.json")) as f:
        shipped = json.load(f)
    strategy = cfg.strategy.to_dict()
    assert strategy.pop("type") == "DeepSpeedStrategy"
    assert strategy == dict(shipped, train_micro_batch_size_per_gpu=2, gradient_accumulation_steps=4,
                            gradient_clipping=1.0)
    assert strategy["zero_optimization"]["stage"] == 2
    assert cfg.runner_type == "FlexibleRunner" and cfg.optim_wrapper.type == "DeepSpeedOptimWrapper"


def test_explicit_json_path_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "mine.json").write_text(json.dumps(dict(zero_optimization=dict(stage=1), bf16=dict(enabled=False))))
    monkeypatch.chdir(tmp_path)
    strategy = apply_cli(small_cfg(), work_dir=str(tmp_path), deepspeed="mine.json").strategy
    assert strategy.zero_optimization.stage == 1 and strategy.bf16.enabled is False
    assert strategy.gradient_accumulation_steps == 4
    monkeypatch.chdir(REPO)  # the same relative name means another file from another directory
    with pytest.raises(FileNotFoundError, match="no such JSON file: mine.json"):
        apply_cli(small_cfg(), work_dir=str(tmp_path), deepspeed="mine.json")
