# Fine-tune a trained model on your own data (README "Fine-tune on your own data"): start from a
# SALMA export (tools/export.py's folder) or a published Sa2VA folder, train LoRA (fresh, r128 on
# the merged LLM), the SAM-2 decoder, CMA and the [SEG] embedding rows on the converted set, then
# export as usual. The readers ask "Can you segment <sentence>?" and answer with the template that
# keeps [SEG] ("Sure, [SEG]." and its variants, datasets/templates.py), so the LLM keeps emitting it.
#
#   python tools/data/convert_own_data.py --annotations my_data/annotations.json --out data/my_data
#   SALMA_PRETRAINED=exports/salma-1b SALMA_OWN_DATA=data/my_data \
#       tools/dist_train.sh configs/finetune_own_data.py 8
#
# A Sa2VA folder starts the same way (CMA added at zero gain): SALMA_PRETRAINED=checkpoints/Sa2VA-1B.
# Images only or videos only: drop the other reader from `mix` (its folder does not exist).
_base_ = ["./_base_/default_runtime.py", "./_base_/models/salma_1b.py"]

pretrained = "{{$SALMA_PRETRAINED:exports/salma-1b}}"
own_data = "{{$SALMA_OWN_DATA:data/my_data}}"
sam2_memory = "{{$SALMA_SAM2_CKPT:checkpoints/sam2.1_hiera_large.pt}}"  # video evaluation / export: memory modules

# The export's (or the release's) own tokenizer, for the model and every reader: the same ids.
tokenizer = dict(type="load_pretrained_tokenizer", path=pretrained)
model = dict(pretrained=pretrained, mllm=dict(tokenizer=tokenizer))

# ------------------------------------------------------------------ data
batch_size = 2
accumulative_counts = 4
image_args = dict(image_size=448, image_seq_length=256, min_dynamic_patch=1, max_dynamic_patch=12,
                  sam_image_size=1024, max_length=8192)
own_images = dict(type="RefCOCODataset", name="own_images", tokenizer=tokenizer, mode="train",
                  data_root=own_data + "/res", image_folder=own_data + "/res/images", split="train",
                  num_classes_per_sample=3, **image_args)
own_videos = dict(type="RefVOSDataset", name="own_videos", tokenizer=tokenizer, mode="train",
                  data_root=own_data + "/rvos/train", expression_file="meta_expressions.json",
                  image_folder="JPEGImages", mask_file="mask_dict.json", num_frames=5, frame_sampling="random",
                  num_expressions_per_sample=3, **image_args)
mix = [(own_images, 1), (own_videos, 1)]  # add entries of configs/SALMA-1B.py's mix to keep its skills
train_dataset = dict(type="DatasetMix", datasets=[d for d, _ in mix], repeats=[r for _, r in mix])
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=4,
    persistent_workers=True,
    dataset=train_dataset,
    sampler=dict(type="LengthGroupedSampler", per_device_batch_size=batch_size, seed=42),
    collate_fn=dict(type="salma.salma_collate"),
)

# ------------------------------------------------------------------ optimisation
lr = 2e-5
max_epochs = 3
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
train_cfg = dict(type="ResumableEpochBasedTrainLoop", max_epochs=max_epochs)
custom_hooks = [
    dict(type="CMAWarmupHook", warmup_ratio=warmup_ratio),
    dict(type="AuxLossWarmupHook", warmup_ratio=0.2),
    dict(type="DataSkipLoggerHook"),
]

# ------------------------------------------------------------------ evaluation (tools/test.py --dataset own_images own_videos)
eval_args = dict(tokenizer=tokenizer, **image_args)
test_datasets = dict(
    own_images=dict(task="res", dataset=dict(type="RefCOCODataset", data_root=own_data + "/res",
                                             image_folder=own_data + "/res/images", **eval_args),
                    splits=dict(val=dict(split="val"))),
    own_videos=dict(task="ref_vos", dataset=dict(type="RefVOSDataset", data_root=own_data + "/rvos/val",
                                                 expression_file="meta_expressions.json", image_folder="JPEGImages",
                                                 mask_file="mask_dict.json", **eval_args)),
)
test_options = dict(num_llm_frames=5, llm_frame_sampling="uniform", propagation="memory", max_new_tokens=32,
                    sam2_memory=sam2_memory)
