"""Fault injection (issue 29), exported folders: config.json that is not a JSON object, is nested
200k deep or is oversized, sizes that disagree with the weights, weights reached through a symlink,
and exports written atomically.
"""
import json
import os
import re
import shutil

import pytest

from projects.salma.datasets.errors import DataError
from projects.salma.datasets.io import read_json
from projects.salma.salma_model import SALMAModel
from test_export import config_path, export_data_cfgs, exported, trained  # noqa: F401


def _copy(exported, tmp_path):  # noqa: F811
    folder = tmp_path / "export"
    shutil.copytree(exported[1], folder)
    return folder


@pytest.mark.parametrize("content, match", [
    ("{not json", r"not valid JSON \(line 1 column 2"),
    ("[1, 2]", r"expected a JSON object"),
    ("[" * 200_000 + "]" * 200_000, r"nested deeper than"),
])
def test_an_exported_config_that_is_not_a_json_object_is_named(content, match, exported, tmp_path):  # noqa: F811
    folder = _copy(exported, tmp_path)
    (folder / "config.json").write_text(content)
    with pytest.raises(DataError, match=re.escape(str(folder / "config.json")) + ": " + match):
        SALMAModel.from_pretrained(str(folder), device="cpu")


def test_json_size_and_depth_are_bounded(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"a": [[[[1]]]]}))
    assert read_json(str(path), max_depth=5) == {"a": [[[[1]]]]}
    with pytest.raises(DataError, match=rf"{path}: nested deeper than 4 levels"):
        read_json(str(path), max_depth=4)
    with pytest.raises(DataError, match=rf"{path}: {path.stat().st_size} bytes, more than the 10 allowed for this file"):
        read_json(str(path), max_bytes=10)


def test_config_sizes_are_checked_against_the_weights_before_allocating(exported, tmp_path):  # noqa: F811
    folder = _copy(exported, tmp_path)
    data = json.loads((folder / "config.json").read_text())
    data["internvl"]["text_config"]["vocab_size"] = 2 ** 31  # a 1 TiB embedding if it were allocated
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(str(folder / "config.json")) + r": sizes disagree with "
                       r".*model.safetensors.*embed_tokens.weight: the config makes \(2147483648, \d+\), the file "
                       r"holds \(\d+, \d+\)"):
        SALMAModel.from_pretrained(str(folder), device="cpu")


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_weight_or_config_file_linked_from_outside_the_folder_is_refused(name, exported, tmp_path):  # noqa: F811
    folder = _copy(exported, tmp_path)
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    shutil.move(folder / name, outside)
    os.symlink(outside, folder / name)
    with pytest.raises(ValueError, match=re.escape(str(folder / name)) + r": the .* is a symlink to .*elsewhere"):
        SALMAModel.from_pretrained(str(folder), device="cpu")


def test_an_export_is_written_atomically(exported, tmp_path, monkeypatch):  # noqa: F811
    import projects.salma.salma_model as salma_model

    folder = _copy(exported, tmp_path)
    before = {n: (folder / n).read_bytes() for n in ("config.json", "model.safetensors")}

    def dies_halfway(state, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(salma_model, "save_file", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        exported[0].save_pretrained(str(folder))
    assert {n: (folder / n).read_bytes() for n in before} == before  # the previous export, whole
