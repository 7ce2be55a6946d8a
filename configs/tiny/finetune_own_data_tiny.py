# configs/finetune_own_data.py at the tiny model's size, for a CPU (tests/test_finetune_own_data.py
# runs the README walkthrough with it): start from a tiny export, train on a converted own-data set.
#
#   SALMA_PRETRAINED=exports/salma-tiny SALMA_OWN_DATA=data/my_data \
#       python tools/train.py configs/tiny/finetune_own_data_tiny.py --work-dir work_dirs/ft_tiny
_base_ = ["../_base_/default_runtime.py", "./salma_tiny.py"]

pretrained = "{{$SALMA_PRETRAINED:exports/salma-tiny}}"
own_data = "{{$SALMA_OWN_DATA:data/my_data}}"
tokenizer = dict(type="load_pretrained_tokenizer", path=pretrained)
model = dict(pretrained=pretrained, mllm=dict(tokenizer=tokenizer))

image_args = dict(image_size=128, image_seq_length=16, min_dynamic_patch=1, max_dynamic_patch=1,
                  use_thumbnail=False, sam_image_size=128, max_length=512, system="")
own_images = dict(type="RefCOCODataset", name="own_images", tokenizer=tokenizer, mode="train",
                  data_root=own_data + "/res", image_folder=own_data + "/res/images", split="train",
                  num_classes_per_sample=2, **image_args)
own_videos = dict(type="RefVOSDataset", name="own_videos", tokenizer=tokenizer, mode="train",
                  data_root=own_data + "/rvos/train", expression_file="meta_expressions.json",
                  image_folder="JPEGImages", mask_file="mask_dict.json", num_frames=2, frame_sampling="random",
                  num_expressions_per_sample=2, **image_args)
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    dataset=dict(type="DatasetMix", datasets=[own_images, own_videos], repeats=[1, 1]),
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="salma.salma_collate"),
)

max_iters = 4
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-4, weight_decay=0.0),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = []
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=max_iters, max_keep_ckpts=1))
custom_hooks = [dict(type="DataSkipLoggerHook")]
env_cfg = dict(dist_cfg=dict(backend="gloo"))

eval_args = dict(tokenizer=tokenizer, **image_args)
test_datasets = dict(
    own_images=dict(task="res", dataset=dict(type="RefCOCODataset", data_root=own_data + "/res",
                                             image_folder=own_data + "/res/images", **eval_args),
                    splits=dict(val=dict(split="val"))),
    own_videos=dict(task="ref_vos", dataset=dict(type="RefVOSDataset", data_root=own_data + "/rvos/val",
                                                 expression_file="meta_expressions.json", image_folder="JPEGImages",
                                                 mask_file="mask_dict.json", **eval_args)),
)
# The tiny model's SAM-2 memory modules are untrained: every frame is decoded with the language.
test_options = dict(propagation="decode_all", num_llm_frames=2, llm_frame_sampling="uniform", max_new_tokens=8)
