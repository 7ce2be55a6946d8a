"""Result files: resumable per-rank JSON lines, run settings guard, submission zip, summaries,
checkpoint loading for evaluation."""
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from projects.salma.datasets.masks import encode_mask
from projects.salma.evaluation.writers import (ResultStore, check_run_meta, summary_markdown, write_submission_zip,
                                               write_summary)


def test_store_appends_and_reads_every_rank(tmp_path):
    a, b = ResultStore(str(tmp_path), rank=0), ResultStore(str(tmp_path), rank=1)
    a.append({"key": "image:1", "index": 0, "x": [1, 2]})
    b.append({"key": "image:2", "index": 1})
    a.append({"key": "image:3", "index": 2})
    assert ResultStore(str(tmp_path), rank=5).load() == {
        "image:1": [{"key": "image:1", "index": 0, "x": [1, 2]}],
        "image:2": [{"key": "image:2", "index": 1}],
        "image:3": [{"key": "image:3", "index": 2}],
    }


def test_store_keeps_one_record_per_fingerprint(tmp_path):
    """An item recomputed for another model / other inputs is appended; both versions are read back
    (the runner picks the one with the current fingerprint). Same fingerprint, other content: corrupt."""
    a, b = ResultStore(str(tmp_path), rank=0), ResultStore(str(tmp_path), rank=1)
    old = {"key": "video:v", "index": 0, "fingerprint": {"model": "m1", "inputs": "i"}, "J": 0.2}
    new = {**old, "fingerprint": {"model": "m2", "inputs": "i"}, "J": 0.4}
    a.append(old)
    b.append(new)
    a.append(old)  # the same record twice (e.g. a rank rewrote it): one version
    assert ResultStore(str(tmp_path)).load() == {"video:v": [old, new]}
    b.append({**new, "J": 0.5})
    with pytest.raises(ValueError, match=r"results-rank1.jsonl:2: item 'video:v' already recorded with the same "
                                         r"fingerprint and different content"):
        ResultStore(str(tmp_path)).load()


def test_interrupted_line_is_dropped_and_overwritten(tmp_path):
    store = ResultStore(str(tmp_path), rank=0)
    store.append({"key": "a", "index": 0})
    with open(store.path, "ab") as f:  # a crash in the middle of a write
        f.write(b'{"key":"b","ind')
    assert set(store.load()) == {"a"}
    store.append({"key": "b", "index": 1})
    assert set(store.load()) == {"a", "b"}
    assert open(store.path).read().count("\n") == 2


def test_corrupt_complete_line_fails_loudly(tmp_path):
    store = ResultStore(str(tmp_path), rank=0)
    with open(store.path, "w") as f:
        f.write("not json\n")
    with pytest.raises(ValueError, match="results-rank0.jsonl:1"):
        store.load()


def test_run_meta_guards_against_mixing_settings(tmp_path):
    check_run_meta(str(tmp_path), {"checkpoint": "a.pth", "options": {"k": (1, 2)}})
    check_run_meta(str(tmp_path), {"checkpoint": "a.pth", "options": {"k": [1, 2]}})  # same after json
    with pytest.raises(ValueError, match="checkpoint"):
        check_run_meta(str(tmp_path), {"checkpoint": "b.pth", "options": {"k": [1, 2]}})


def test_submission_zip_layout(tmp_path):
    h, w = 6, 9
    m = np.zeros((h, w), dtype=np.uint8)
    m[1:4, 2:5] = 1
    records = [
        {"video_id": "v1", "size": [h, w], "frame_names": ["00000", "00005.jpg"],
         "expressions": [{"exp_id": "0", "masks": [encode_mask(m), None]}, {"exp_id": "1", "masks": None}]},
    ]
    counts = write_submission_zip(str(tmp_path / "sub.zip"), records)
    assert counts == {"videos": 1, "expressions": 2, "pngs": 4}
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        names = sorted(zf.namelist())
        assert names == ["Annotations/v1/0/00000.png", "Annotations/v1/0/00005.png",
                         "Annotations/v1/1/00000.png", "Annotations/v1/1/00005.png"]
        first = np.asarray(Image.open(io.BytesIO(zf.read("Annotations/v1/0/00000.png"))))
        assert first.shape == (h, w) and set(np.unique(first)) == {0, 255}
        assert np.array_equal(first > 0, m > 0)
        assert not np.asarray(Image.open(io.BytesIO(zf.read("Annotations/v1/1/00005.png")))).any()


def test_summary_merges_runs_and_renders_tables(tmp_path):
    res = {"task": "res", "protocol": None, "metrics": {"cIoU": 50.0, "gIoU": 40.0, "cIoU_lenient": 55.0,
                                                        "gIoU_lenient": 45.0, "n_sentences": 3, "n_no_seg": 1}}
    revos = {"task": "ref_vos", "protocol": "revos", "metrics": {
        s: {"J": 1.0, "F": 2.0, "J&F": 1.5, "A": 90.0, "R": 80.0, "n": 2} for s in ("referring", "reasoning", "overall")}}
    write_summary(str(tmp_path), {"refcoco/val": res})
    summary = write_summary(str(tmp_path), {"revos": revos})
    assert set(summary) == {"refcoco/val", "revos"}
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    md = (tmp_path / "summary.md").read_text()
    assert md == summary_markdown(summary)
    assert "| refcoco/val | 50.00 | 40.00 | 55.00 | 45.00 | 3 | 1 |" in md
    assert "| revos | reasoning | 1.50 | 1.00 | 2.00 | 90.00 | 80.00 | 2 |" in md
    refsav = {"task": "ref_vos", "protocol": "refsav", "metrics": {
        s: {"J": 1.0, "F": 2.0, "J&F": 1.5, "A": 90.0, "n": 2} for s in ("long", "short", "overall")}}
    md = summary_markdown(write_summary(str(tmp_path), {"ref_sav": refsav}))
    assert "## Ref-SAV (%)" in md and "| ref_sav | short | 1.50 | 1.00 | 2.00 | 90.00 | 2 |" in md
    assert "| ref_sav | 1.50 |" not in md  # not in the per-expression Ref-VOS table


def test_checkpoint_loading_rejects_unknown_keys_and_missing_trainable_unless_allowed(tmp_path):
    from projects.salma.checkpoint import load_trained_weights

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[1].requires_grad_(False)
    state = {k: v.clone() + 1 for k, v in model.state_dict().items() if k.startswith("0.")}
    torch.save({"state_dict": {"0.weight": state["0.weight"]}, "meta": {"epoch": 1}}, tmp_path / "part.pth")
    with pytest.raises(ValueError, match=r"1 trainable tensors are not in the checkpoint.*\['0.bias'\]"):
        load_trained_weights(model, str(tmp_path / "part.pth"))
    report = load_trained_weights(model, str(tmp_path / "part.pth"), allow_missing=True)  # deliberate
    assert torch.equal(model[0].weight, state["0.weight"])
    assert report.missing_trainable == ["0.bias"] and report.missing_frozen == 2
    torch.save({"state_dict": {**state, "head.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="head.weight"):
        load_trained_weights(model, str(tmp_path / "bad.pth"))
    torch.save({"model": state}, tmp_path / "raw.pth")
    with pytest.raises(ValueError, match="state_dict"):
        load_trained_weights(model, str(tmp_path / "raw.pth"))
    (tmp_path / "iter_9.pth").mkdir()  # mmengine's DeepSpeed strategy: a folder per checkpoint
    with pytest.raises(FileNotFoundError, match="mp_rank_00_model_states.pt"):
        load_trained_weights(model, str(tmp_path / "iter_9.pth"))
    torch.save({"module": {"0.bias": state["0.bias"]}}, tmp_path / "iter_9.pth" / "mp_rank_00_model_states.pt")
    with pytest.raises(ValueError, match=r"\['0.weight'\]"):
        load_trained_weights(model, str(tmp_path / "iter_9.pth"))
    assert load_trained_weights(model, str(tmp_path / "iter_9.pth"), allow_missing=True).missing_trainable == [
        "0.weight"]
    assert torch.equal(model[0].bias, state["0.bias"])
