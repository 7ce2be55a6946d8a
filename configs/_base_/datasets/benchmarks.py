# What tools/test.py can evaluate: the benchmarks of the seed's result tables, laid out under
# SALMA_DATA_ROOT (default ./data) as docs/formats.md describes. Readers take the model's image
# sizes and tokenizer from the config; only paths and splits are named here.
#
#   python tools/test.py configs/SALMA-1B.py --checkpoint CKPT --dataset refcoco mevis
#   python tools/test.py configs/SALMA-1B.py --checkpoint CKPT --dataset refcocog --split test
test_data_root = "{{$SALMA_DATA_ROOT:data}}"
test_coco_images = test_data_root + "/coco/train2014"

test_datasets = dict(
    # ---------------------------------------------------------------- RES (cIoU / gIoU)
    refcoco=dict(
        task="res",
        dataset=dict(type="RefCOCODataset", data_root=test_data_root + "/refcoco", image_folder=test_coco_images, split_by="unc"),
        splits=dict(val=dict(split="val"), testA=dict(split="testA"), testB=dict(split="testB")),
    ),
    refcoco_plus=dict(
        task="res",
        dataset=dict(type="RefCOCODataset", data_root=test_data_root + "/refcoco+", image_folder=test_coco_images, split_by="unc"),
        splits=dict(val=dict(split="val"), testA=dict(split="testA"), testB=dict(split="testB")),
    ),
    refcocog=dict(
        task="res",
        dataset=dict(type="RefCOCODataset", data_root=test_data_root + "/refcocog", image_folder=test_coco_images, split_by="umd"),
        splits=dict(val=dict(split="val"), test=dict(split="test")),
    ),
    # ---------------------------------------------------------------- referring VOS (J, F, J&F)
    ref_davis17=dict(  # converted to the MeViS layout (docs/formats.md)
        task="ref_vos",
        dataset=dict(type="RefVOSDataset", data_root=test_data_root + "/davis17/valid", expression_file="meta_expressions.json",
                     image_folder="JPEGImages", mask_file="mask_dict.json"),
    ),
    mevis=dict(
        task="ref_vos",
        dataset=dict(type="RefVOSDataset", expression_file="meta_expressions.json", image_folder="JPEGImages"),
        splits=dict(
            valid_u=dict(data_root=test_data_root + "/mevis/valid_u", mask_file="mask_dict.json"),
            valid=dict(data_root=test_data_root + "/mevis/valid", mask_file=None),  # no public GT: submission zip
        ),
    ),
    revos=dict(  # J, F, J&F, A, R per referring / reasoning / overall
        task="ref_vos",
        protocol="revos",
        dataset=dict(type="RefVOSDataset", data_root=test_data_root + "/revos", expression_file="meta_expressions_valid_.json",
                     image_folder="JPEGImages", mask_file="mask_dict.json",
                     foreground_file="mask_dict_foreground.json"),
    ),
    ref_sav=dict(  # Sa2VA's Ref-SAV valid: MeViS layout, frames from the SA-V mp4; J, F, J&F, A per long / short
        task="ref_vos",
        protocol="refsav",
        dataset=dict(type="RefSAVDataset", data_root=test_data_root, expression_file="ref_sav/valid/meta_expressions_valid.json",
                     mask_file="ref_sav/valid/mask_dict.json", video_folder="sav/sav_train",
                     video_file="{video_id:.7}/{video_id}.mp4"),
    ),
    ref_ytvos=dict(  # no public GT: submission zip
        task="ref_vos",
        dataset=dict(type="RefVOSDataset", data_root=test_data_root + "/ref_ytvos/valid", expression_file="meta_expressions.json",
                     image_folder="JPEGImages", mask_file=None),
    ),
)
# The LLM sees 5 frames sampled uniformly over the video (Sa2VA-i's choice; Sa2VA's own protocol,
# the first 5 frames: --cfg-options test_options.llm_frame_sampling=first); each is decoded with
# the language (CMA + prior) and conditions SAM-2's memory, which tracks every frame, streamed.
# sam2_memory=None reads the memory modules from the model's SAM-2 checkpoint.
test_options = dict(num_llm_frames=5, llm_frame_sampling="uniform", propagation="memory", max_new_tokens=32)
