# + CMA (no MBA): cross-modal attention over [SEG] + expression tokens, no structure prior.
_base_ = ["../Sa2VA-1B.py"]
model = dict(
    grounding_encoder=dict(
        enable_cma=True,
        mask_source="none",
        cma=dict(use_multi_token=True, topk_tokens=0, enable_mask_bias=False),
    )
)
custom_hooks = [dict(type="CMAWarmupHook", warmup_ratio=0.05), dict(type="DataSkipLoggerHook")]
