# Sa2VA-1B baseline: SALMA-1B without CMA, without the structure prior and without the auxiliary
# losses. Everything else (data, schedule, LoRA, SAM-2 decoder) is identical.
_base_ = ["./SALMA-1B.py"]

model = dict(
    grounding_encoder=dict(enable_cma=False, mask_source="none"),
    loss_tmc_weight=0.0,
    loss_boundary_weight=0.0,
)
custom_hooks = [dict(type="DataSkipLoggerHook")]
