"""Collate contract on a mixed batch, length-grouped sampler, dataset mix with repeats."""
import torch

from projects.salma.constants import IGNORE_INDEX, IMG_CONTEXT_TOKEN, SEG_TOKEN
from projects.salma.datasets import samplers
from projects.salma.datasets.collate import salma_collate
from projects.salma.datasets.mix import DatasetMix
from projects.salma.datasets.samplers import LengthGroupedSampler, length_grouped_indices
from projects.salma.registry import DATA_SAMPLERS, DATASETS, FUNCTIONS


def test_collate_mixed_batch(build_data, data_cfgs, tiny_tokenizer):
    image = build_data(data_cfgs["refcoco_train"])[0]
    video = build_data(data_cfgs["mevis_train"])[0]
    llava = build_data(data_cfgs["llava"])
    text = llava[3]
    assert text["pixel_values"] is None
    samples = [image, video, text, llava[0]]
    out = FUNCTIONS.get("salma_collate")(samples)
    assert set(out) == {"data", "data_samples"} and out["data_samples"] is None
    b = out["data"]
    assert set(b) == {"input_ids", "attention_mask", "labels", "expr_ids", "pixel_values", "image_grid_thw",
                      "g_pixel_values", "masks", "prompt_masks", "meta"}
    assert b["image_grid_thw"] is None  # InternVL tiles have no patch grid
    L = max(len(s["input_ids"]) for s in samples)
    for key, dtype in [("input_ids", torch.long), ("labels", torch.long), ("expr_ids", torch.long),
                       ("attention_mask", torch.bool)]:
        assert b[key].shape == (4, L) and b[key].dtype == dtype
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        assert b["attention_mask"][i].sum() == n and b["attention_mask"][i, :n].all()
        assert (b["input_ids"][i, n:] == tiny_tokenizer.pad_token_id).all()
        assert (b["labels"][i, n:] == IGNORE_INDEX).all() and (b["expr_ids"][i, n:] == -1).all()
        seg = int((b["input_ids"][i] == tiny_tokenizer.convert_tokens_to_ids(SEG_TOKEN)).sum())
        assert seg == (0 if b["masks"][i] is None else b["masks"][i].shape[0])
    tiles = sum(s["pixel_values"].shape[0] for s in samples if s["pixel_values"] is not None)
    assert b["pixel_values"].shape == (tiles, 3, 64, 64)
    assert int((b["input_ids"] == tiny_tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)).sum()) == tiles * 16
    assert torch.equal(b["pixel_values"][: image["pixel_values"].shape[0]], image["pixel_values"])
    assert [g is None for g in b["g_pixel_values"]] == [False, False, True, True]
    assert [m is None for m in b["masks"]] == [False, False, True, True]
    assert b["prompt_masks"] == [None] * 4
    assert b["g_pixel_values"][1].shape == (5, 3, 128, 128) and b["masks"][1].shape[1:] == (5, 96, 128)
    assert [m["dataset"] for m in b["meta"]] == ["RefCOCODataset", "RefVOSDataset", "LLaVADataset", "LLaVADataset"]
    assert salma_collate([text])["data"]["pixel_values"] is None
    assert salma_collate([text], pad_token_id=7)["data"]["input_ids"].shape == (1, len(text["input_ids"]))


class _Lengths(torch.utils.data.Dataset):
    def __init__(self, lengths):
        self.modality_lengths = lengths

    def __len__(self):
        return len(self.modality_lengths)


def test_length_grouped_indices_group_and_are_deterministic():
    g = torch.Generator()
    lengths = [((i * 37) % 100 + 1) * (1 if i % 3 else -1) for i in range(96)]
    idx = length_grouped_indices(lengths, 4, 32, g.manual_seed(0))
    assert sorted(idx) == list(range(96))
    batches = [idx[i:i + 4] for i in range(0, 96, 4)]
    for batch in batches:  # one modality per batch
        assert len({lengths[i] > 0 for i in batch}) == 1
    spread = sum(max(abs(lengths[i]) for i in b) - min(abs(lengths[i]) for i in b) for b in batches)
    shuffled = torch.randperm(96, generator=torch.Generator().manual_seed(0)).tolist()
    random_spread = sum(max(abs(lengths[i]) for i in shuffled[k:k + 4]) - min(abs(lengths[i]) for i in shuffled[k:k + 4])
                        for k in range(0, 96, 4))
    assert spread < random_spread / 3
    assert idx == length_grouped_indices(lengths, 4, 32, g.manual_seed(0))
    assert idx != length_grouped_indices(lengths, 4, 32, g.manual_seed(1))


def test_sampler_epochs_and_ranks(monkeypatch):
    ds = _Lengths([i % 17 + 1 for i in range(50)])
    sampler = DATA_SAMPLERS.build(dict(type="LengthGroupedSampler", per_device_batch_size=4), default_args=dict(dataset=ds, seed=3))
    first = list(sampler)
    assert len(first) == len(sampler) == 50 and sorted(first) == list(range(50))
    assert first == list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    per_rank = []
    for rank in range(2):
        monkeypatch.setattr(samplers, "get_dist_info", lambda rank=rank: (rank, 2))
        s = LengthGroupedSampler(ds, per_device_batch_size=4, seed=3)
        per_rank.append(list(s))
        assert len(s) == 25
    assert sorted(per_rank[0] + per_rank[1]) == list(range(50))


def test_mix_repeats(build_data, data_cfgs):
    mix = DATASETS.build(dict(type="DatasetMix", datasets=[data_cfgs["refcoco_train"], data_cfgs["mevis_train"],
                                                            data_cfgs["llava"]], repeats=[2, 3, 0]))
    n_img, n_vid = len(mix.datasets[0]), len(mix.datasets[1])
    assert len(mix) == 2 * n_img + 3 * n_vid
    assert mix.locate(0) == (0, 0, 0) and mix.locate(n_img) == (0, 0, 1)
    assert mix.locate(2 * n_img + n_vid + 1) == (1, 1, 1)
    assert mix.modality_lengths == mix.datasets[0].modality_lengths * 2 + mix.datasets[1].modality_lengths * 3
    a, b = mix[0], mix[n_img]  # the same image, two repeats: other refs / templates
    assert a["meta"]["image_id"] == b["meta"]["image_id"]
    assert not torch.equal(a["input_ids"], b["input_ids"]) or a["meta"]["ref_ids"] != b["meta"]["ref_ids"]
    assert mix[len(mix) - 1]["meta"]["dataset"] == "RefVOSDataset"
    assert set(mix.skip_counts) == {"RefCOCODataset", "RefVOSDataset", "LLaVADataset"}
    sampler = LengthGroupedSampler(mix, per_device_batch_size=2, seed=0)
    assert sorted(sampler) == list(range(len(mix)))
    assert isinstance(mix, DatasetMix)


def test_runner_builds_the_tiny_train_dataloader(data_cfgs):
    """Config strings resolve through mmengine's root registries under scope 'salma', as in Runner."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    init_default_scope("salma")
    loader = Runner.build_dataloader(dict(
        batch_size=2, num_workers=0,
        dataset=dict(type="DatasetMix", datasets=[data_cfgs["refcoco_train"], data_cfgs["mevis_train"]], repeats=[1, 2]),
        sampler=dict(type="LengthGroupedSampler", per_device_batch_size=2),
        collate_fn=dict(type="salma.salma_collate"),  # root FUNCTIONS.get needs the scope
    ), seed=0)
    assert isinstance(loader.sampler, LengthGroupedSampler) and len(loader.dataset) == 24 + 2 * 6
    batch = next(iter(loader))
    assert batch["data"]["input_ids"].shape[0] == 2 and batch["data_samples"] is None
    val = Runner.build_dataloader(dict(batch_size=1, num_workers=0, dataset=data_cfgs["refcoco_val"],
                                       sampler=dict(type="DefaultSampler", shuffle=False),
                                       collate_fn=dict(type="salma.salma_eval_collate")), seed=0)
    rows = next(iter(val))["data"]
    assert rows["input_ids"].shape[0] == len(rows["meta"]) == len(val.dataset[0]["meta"]["sent_ids"])
