# CPU demo: the tiny SALMA model trained on synthetic shapes written in the real formats
# (python tools/data/make_synthetic.py --out data/synthetic). Used by tools/demo_cpu.py.
_base_ = ["../_base_/default_runtime.py", "./salma_tiny.py"]

data_root = "{{$SALMA_SYNTH_ROOT:data/synthetic}}"
image_args = dict(image_size=128, image_seq_length=16, min_dynamic_patch=1, max_dynamic_patch=1,
                  use_thumbnail=False, sam_image_size=128, max_length=512, system="")

train_dataset = dict(
    type="DatasetMix",
    datasets=[
        dict(type="RefCOCODataset", name="refcoco_synth", tokenizer={{_base_.tokenizer}}, mode="train",
             data_root=data_root + "/refcoco_synth", image_folder=data_root + "/refcoco_synth/images",
             split="train", num_classes_per_sample=3, **image_args),
        dict(type="RefVOSDataset", name="mevis_synth", tokenizer={{_base_.tokenizer}}, mode="train",
             data_root=data_root + "/mevis_synth/train", expression_file="meta_expressions.json",
             image_folder="JPEGImages", mask_file="mask_dict.json", num_frames=2, frame_sampling="random",
             num_expressions_per_sample=2, **image_args),
    ],
    repeats=[1, 2],
)
val_dataset = dict(type="RefCOCODataset", name="refcoco_synth_val", tokenizer={{_base_.tokenizer}}, mode="eval",
                   data_root=data_root + "/refcoco_synth", image_folder=data_root + "/refcoco_synth/images",
                   split="val", **image_args)

train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    dataset=train_dataset,
    # One endless shuffled stream: mmengine's iteration loop pauses 2 s at every epoch end of a
    # finite sampler (70 pauses in a 3000-iteration demo on this small set).
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="salma.salma_collate"),
)

max_iters = 1500  # about 4.5 minutes on 2 CPU cores (tools/demo_cpu.py: 3000 training images)
warmup_ratio = 0.05  # linear LR warm-up, then cosine (tools/demo_cpu.py --iters keeps these ratios)
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=int(warmup_ratio * max_iters)),
    dict(type="CosineAnnealingLR", eta_min=0.0, by_epoch=False, begin=int(warmup_ratio * max_iters), end=max_iters),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=max_iters, max_keep_ckpts=1),
)
custom_hooks = [
    dict(type="CMAWarmupHook", warmup_ratio=warmup_ratio),
    dict(type="AuxLossWarmupHook", warmup_ratio=0.2),
    dict(type="DataSkipLoggerHook"),
]
env_cfg = dict(dist_cfg=dict(backend="gloo"))

# tools/test.py on the held-out synthetic splits (the demo evaluates these after training), read
# with the training preprocessing (image_args: one 128 px tile, no thumbnail).
test_datasets = dict(
    refcoco_synth=dict(
        task="res",
        dataset=dict(type="RefCOCODataset", data_root=data_root + "/refcoco_synth",
                     image_folder=data_root + "/refcoco_synth/images", **image_args),
        splits=dict(val=dict(split="val")),
    ),
    mevis_synth=dict(
        task="ref_vos",
        dataset=dict(type="RefVOSDataset", data_root=data_root + "/mevis_synth/valid_u",
                     expression_file="meta_expressions.json", image_folder="JPEGImages", mask_file="mask_dict.json",
                     **image_args),
        splits=dict(valid_u=dict()),
    ),
)
# The tiny model's SAM-2 memory modules are never trained, so every frame is decoded with the
# language prompt ('decode_all') instead of tracked; the LLM sees 2 frames, as in training.
test_options = dict(propagation="decode_all", num_llm_frames=2, llm_frame_sampling="uniform", max_new_tokens=16)
