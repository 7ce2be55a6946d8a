# SALMA-1B, as docs/design.md ("SALMA-1B") states it: InternVL2.5-1B (frozen, LoRA r128/α256/0.05), SAM-2.1
# hiera-large (frozen encoder, trainable decoder), CMA + MBA gate, TMC + boundary losses with
# warm-up, batch 2/GPU × accumulation 4, AdamW 4e-5, 5% linear warm-up then cosine, 1 epoch, bf16.
#
#   tools/dist_train.sh configs/SALMA-1B.py 8 [--deepspeed zero2]
#
# Data lives under SALMA_DATA_ROOT (default ./data), laid out as docs/formats.md describes:
#   refcoco/ refcoco+/ refcocog/ (refer layout) + coco/{train2014,val2014,train2017,val2017}/,
#   mevis/train/, revos/, ref_ytvos/train/ (converted), chat_univi/ (video_chat.json, Activity_Videos/),
#   sav/ (SA-V sav_train/sav_0xx/*.mp4 + *_manual.json, Sa2VA's sam_v_final_v3.json), glamm/ (GranDf,
#   OpenPsgGCG, flickr_mergedGT_GCG, RefCOCOg-GCG converted by tools/data/convert_gcg.py) + flickr30k/images/,
#   llava/ (llava_v1_5_mix665k.json), osprey/Osprey-724K/osprey_*.json. Evaluation sets:
#   configs/_base_/datasets/benchmarks.py.
_base_ = ["./_base_/default_runtime.py", "./_base_/models/salma_1b.py", "./_base_/datasets/benchmarks.py"]

data_root = "{{$SALMA_DATA_ROOT:data}}"

# ------------------------------------------------------------------ data
batch_size = 2
accumulative_counts = 4
num_workers = 4
max_length = 8192
image_args = dict(image_size=448, image_seq_length=256, min_dynamic_patch=1, max_dynamic_patch=12,
                  sam_image_size=1024, max_length=max_length)

refcoco_common = dict(type="RefCOCODataset", tokenizer={{_base_.tokenizer}}, mode="train",
                      image_folder=data_root + "/coco/train2014", split="train", num_classes_per_sample=3,
                      **image_args)
video_common = dict(type="RefVOSDataset", tokenizer={{_base_.tokenizer}}, mode="train", num_frames=5,
                    frame_sampling="random", num_expressions_per_sample=3, **image_args)

gcg_common = dict(type="GCGDataset", tokenizer={{_base_.tokenizer}}, mode="train", **image_args)
osprey_common = dict(type="OspreyDataset", tokenizer={{_base_.tokenizer}}, mode="train",
                     image_folder=[data_root + "/coco/train2014", data_root + "/coco/val2014",
                                   data_root + "/coco/train2017", data_root + "/coco/val2017"], **image_args)

# The training mix of docs/design.md (Sa2VA-1B's): (reader entry, repeats). tests/test_configs.py checks it entry by entry.
mix = [
    # referring segmentation, images
    (dict(refcoco_common, name="refcoco", data_root=data_root + "/refcoco", split_by="unc"), 4),
    (dict(refcoco_common, name="refcoco+", data_root=data_root + "/refcoco+", split_by="unc"), 4),
    (dict(refcoco_common, name="refcocog", data_root=data_root + "/refcocog", split_by="umd"), 4),
    # referring segmentation, videos
    (dict(video_common, name="mevis", data_root=data_root + "/mevis/train", expression_file="meta_expressions.json",
          image_folder="JPEGImages", mask_file="mask_dict.json"), 4),
    (dict(video_common, name="revos", data_root=data_root + "/revos", expression_file="meta_expressions_train_.json",
          image_folder="JPEGImages", mask_file="mask_dict.json"), 10),
    (dict(video_common, name="ref_ytvos", data_root=data_root + "/ref_ytvos/train",
          expression_file="meta_expressions.json", image_folder="JPEGImages", mask_file="mask_dict.pkl"), 4),
    # video chat (Chat-UniVi), SA-V pseudo-labelled referring videos (Sa2VA's video_sam2 set)
    (dict(type="VideoQADataset", name="video_qa", tokenizer={{_base_.tokenizer}}, mode="train",
          data_file=data_root + "/chat_univi/video_chat.json", video_folder=data_root + "/chat_univi/Activity_Videos",
          num_frames=5, **image_args), 1),
    (dict(type="SAVDataset", name="sav", tokenizer={{_base_.tokenizer}}, mode="train",
          expression_file=data_root + "/sav/sam_v_final_v3.json", video_folder=data_root + "/sav/sav_train",
          num_frames=5, num_objects_per_sample=5, expression="long", **image_args), 4),
    # grounded captions (GLaMM GCG)
    (dict(gcg_common, name="psg", data_file=data_root + "/glamm/OpenPsgGCG_train.json",
          image_folder=data_root + "/coco/train2017"), 1),
    (dict(gcg_common, name="grandf", data_file=data_root + "/glamm/GranDf_HA_GCG_train.json",
          image_folder=data_root + "/glamm/GranDf_HA_images/train"), 10),
    (dict(gcg_common, type="FlickrGCGDataset", name="flickr", data_file=data_root + "/glamm/flickr_mergedGT_GCG_train.json",
          image_folder=data_root + "/flickr30k/images"), 1),
    # GLaMM's RefCOCOg-GCG, converted once to the GranD-f layout:
    #   python tools/data/convert_gcg.py --src data/glamm/RefCOCOg_GCG_train.json --out data/glamm/RefCOCOg_GCG_train_grandf.json
    (dict(gcg_common, name="refcocog_gcg", data_file=data_root + "/glamm/RefCOCOg_GCG_train_grandf.json",
          image_folder=data_root + "/coco/train2014"), 1),
    # image chat
    (dict(type="LLaVADataset", name="llava", tokenizer={{_base_.tokenizer}}, mode="train",
          data_file=data_root + "/llava/llava_v1_5_mix665k.json", image_folder=data_root + "/llava/images",
          **image_args), 1),
    # region prompts (Osprey-724K): region masks in, text out
] + [(dict(osprey_common, name=f"osprey_{kind}", kind=kind,
           data_file=data_root + f"/osprey/Osprey-724K/osprey_{kind}.json"), 1)
     for kind in ("conversation", "detail_description", "short_form", "part_level", "lvis_positive_negative")]

train_dataset = dict(type="DatasetMix", datasets=[d for d, _ in mix], repeats=[r for _, r in mix])

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=num_workers,
    persistent_workers=True,
    dataset=train_dataset,
    sampler=dict(type="LengthGroupedSampler", per_device_batch_size=batch_size, seed=42),
    collate_fn=dict(type="salma.salma_collate"),
)

# ------------------------------------------------------------------ optimisation
lr = 4e-5
max_epochs = 1
warmup_ratio = 0.05
optim_wrapper = dict(
    type="AmpOptimWrapper",
    dtype="bfloat16",
    optimizer=dict(type="AdamW", lr=lr, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=1.0, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-5, by_epoch=True, begin=0, end=warmup_ratio * max_epochs,
         convert_to_iter_based=True),
    dict(type="CosineAnnealingLR", eta_min=0.0, by_epoch=True, begin=warmup_ratio * max_epochs, end=max_epochs,
         convert_to_iter_based=True),
]
# Resumes a mid-epoch iteration checkpoint at the next batch without reloading the ones before it
# (mmengine's EpochBasedTrainLoop restarts the epoch: repeated data, past max_iters).
train_cfg = dict(type="ResumableEpochBasedTrainLoop", max_epochs=max_epochs)

custom_hooks = [
    dict(type="CMAWarmupHook", warmup_ratio=warmup_ratio),
    dict(type="AuxLossWarmupHook", warmup_ratio=0.2),
    dict(type="DataSkipLoggerHook"),
]
