# Sa2VA-Qwen2.5-VL-3B baseline: SALMA-Qwen2.5-VL-3B without CMA, without the structure prior and without
# the auxiliary losses (as configs/Sa2VA-1B.py is to SALMA-1B). Everything else (backbone, data,
# schedule, LoRA, SAM-2 decoder, the decode rule) is identical.
_base_ = ["./SALMA-Qwen2.5-VL-3B.py"]

model = dict(
    grounding_encoder=dict(enable_cma=False, mask_source="none"),
    loss_tmc_weight=0.0,
    loss_boundary_weight=0.0,
)
custom_hooks = [dict(type="DataSkipLoggerHook")]
