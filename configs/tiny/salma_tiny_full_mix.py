# The tiny synthetic setup with every training format of the seed's mix (the "full mix" flag: pick
# this config instead of salma_tiny_synthetic.py, whose two-dataset mix the CPU demo keeps):
# RefCOCO + MeViS as there, plus grounded captions (GranD-f, PSG, Flickr), image chat (LLaVA), region
# prompts (the five Osprey kinds), video chat (Chat-UniVi) and SA-V referring videos, all written by
# tools/data/make_synthetic.py in their real formats.
#
#   python tools/data/make_synthetic.py --out data/synthetic --height 128 --width 128
#   python tools/train.py configs/tiny/salma_tiny_full_mix.py
_base_ = ["./salma_tiny_synthetic.py"]

data_root = "{{$SALMA_SYNTH_ROOT:data/synthetic}}"
image_args = dict(_base_.image_args)
tokenizer = dict(_base_.tokenizer)

full_mix = [
    (dict(type="GCGDataset", name="grandf_synth", data_file=data_root + "/gcg_synth/gcg.json",
          image_folder=data_root + "/refcoco_synth/images"), 1),
    (dict(type="GCGDataset", name="psg_synth", data_file=data_root + "/psg_synth/OpenPsgGCG_train.json",
          image_folder=data_root + "/refcoco_synth/images"), 1),
    (dict(type="FlickrGCGDataset", name="flickr_synth", data_file=data_root + "/flickr_synth/flickr_mergedGT_GCG_train.json",
          image_folder=data_root + "/refcoco_synth/images"), 1),
    (dict(type="LLaVADataset", name="llava_synth", data_file=data_root + "/llava_synth/llava.json",
          image_folder=data_root + "/refcoco_synth/images"), 1),
    (dict(type="VideoQADataset", name="video_qa_synth", data_root=data_root + "/video_qa_synth",
          data_file="video_chat.json", video_folder="videos", num_frames=2), 1),
    (dict(type="SAVDataset", name="sav_synth", data_root=data_root + "/sav_synth", expression_file="sav_expressions.json",
          video_folder="sav_train", num_frames=2, num_objects_per_sample=2), 1),
] + [(dict(type="OspreyDataset", name=f"osprey_{kind}_synth", kind=kind, data_root=data_root + "/osprey_synth",
           data_file=f"Osprey-724K/osprey_{kind}.json", image_folder=["images/train2017", "images/val2017"]), 1)
     for kind in ("conversation", "detail_description", "short_form", "part_level", "lvis_positive_negative")]

train_dataset = dict(
    type="DatasetMix",
    datasets=[*_base_.train_dataset.datasets,
              *[dict(d, tokenizer=tokenizer, mode="train", **image_args) for d, _ in full_mix]],
    repeats=[*_base_.train_dataset.repeats, *[r for _, r in full_mix]],
)
train_dataloader = dict(dataset=train_dataset)

# Ref-SAV (long / short expressions reported separately) besides the base's held-out splits.
test_datasets = dict(
    ref_sav_synth=dict(
        task="ref_vos",
        protocol="refsav",
        dataset=dict(type="RefSAVDataset", data_root=data_root + "/sav_synth",
                     expression_file="ref_sav_valid/meta_expressions_valid.json", mask_file="ref_sav_valid/mask_dict.json",
                     video_folder="sav_train", video_file="{video_id:.7}/{video_id}.mp4", **image_args),
    ),
)
