"""Shared fixtures. Data: a small synthetic set written once per session (real on-disk formats)."""
import pytest


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """Roots of the synthetic RefCOCO / MeViS / LLaVA / GCG / Osprey / video QA / SA-V / Flickr / PSG sets
    (see datasets/synthetic.py)."""
    from projects.salma.datasets.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    roots = make_synthetic(str(out), seed=0, num_images=24, num_val_images=8, num_videos=6, num_val_videos=3,
                           num_frames=8, num_llava=8, num_gcg=6, num_osprey=6, num_video_qa=3, num_sav_videos=2,
                           num_ref_sav_videos=2, num_flickr=4, num_psg=4)
    roots["out"] = str(out)
    return roots


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from projects.salma.datasets.tokenizer import build_tokenizer

    return build_tokenizer(dict(type="build_tiny_tokenizer"))


@pytest.fixture(scope="session")
def tiny_data_kwargs():
    """Reader keyword arguments of the tiny (CPU) setup."""
    return dict(tokenizer=dict(type="build_tiny_tokenizer"), image_size=64, image_seq_length=16,
                min_dynamic_patch=1, max_dynamic_patch=4, sam_image_size=128, max_length=2048)


@pytest.fixture(scope="session")
def data_cfgs(synthetic_data, tiny_data_kwargs):
    """Config dicts of every reader on the synthetic set (the tiny configs use the same ones)."""
    r = synthetic_data
    return {
        "refcoco_train": dict(type="RefCOCODataset", data_root=r["refcoco"], image_folder=r["refcoco_images"],
                              split="train", **tiny_data_kwargs),
        "refcoco_val": dict(type="RefCOCODataset", data_root=r["refcoco"], image_folder=r["refcoco_images"],
                            split="val", mode="eval", **tiny_data_kwargs),
        "mevis_train": dict(type="RefVOSDataset", data_root=r["mevis_train"], expression_file="meta_expressions.json",
                            image_folder="JPEGImages", mask_file="mask_dict.json", **tiny_data_kwargs),
        "mevis_valid_u": dict(type="RefVOSDataset", data_root=r["mevis_valid_u"],
                              expression_file="meta_expressions.json", image_folder="JPEGImages",
                              mask_file="mask_dict.json", mode="eval", frame_sampling="uniform", **tiny_data_kwargs),
        "llava": dict(type="LLaVADataset", data_file=r["llava"], image_folder=r["refcoco_images"], **tiny_data_kwargs),
        "gcg": dict(type="GCGDataset", data_file=r["gcg"], image_folder=r["refcoco_images"], **tiny_data_kwargs),
        "psg": dict(type="GCGDataset", data_file=r["psg"], image_folder=r["refcoco_images"], **tiny_data_kwargs),
        "flickr": dict(type="FlickrGCGDataset", data_file=r["flickr"], image_folder=r["refcoco_images"],
                       **tiny_data_kwargs),
        **{f"osprey_{kind}": dict(type="OspreyDataset", data_root=r["osprey"], data_file=f"Osprey-724K/osprey_{kind}.json",
                                  image_folder=["images/train2017", "images/val2017"], kind=kind, **tiny_data_kwargs)
           for kind in ("conversation", "detail_description", "short_form", "part_level", "lvis_positive_negative")},
        "video_qa": dict(type="VideoQADataset", data_root=r["video_qa"], data_file="video_chat.json",
                         video_folder="videos", num_frames=5, **tiny_data_kwargs),
        "sav": dict(type="SAVDataset", data_root=r["sav"], expression_file="sav_expressions.json",
                    video_folder="sav_train", num_frames=3, num_objects_per_sample=5, **tiny_data_kwargs),
        "ref_sav": dict(type="RefSAVDataset", data_root=r["sav"], expression_file="ref_sav_valid/meta_expressions_valid.json",
                        mask_file="ref_sav_valid/mask_dict.json", video_folder="sav_train",
                        video_file="{video_id:.7}/{video_id}.mp4", mode="eval", frame_sampling="uniform",
                        num_frames=3, **tiny_data_kwargs),
    }


@pytest.fixture(scope="session")
def build_data():
    """Build a dataset from a config dict through the registry (a copy: configs stay reusable)."""
    import copy

    import projects.salma.datasets  # noqa: F401  (registers the readers)
    from projects.salma.registry import DATASETS

    return lambda cfg, **overrides: DATASETS.build({**copy.deepcopy(cfg), **overrides})
