# + TMC loss: [SEG] embedding vs mask-pooled SAM-2 features (InfoNCE, tau 0.15), aux warm-up 20%.
_base_ = ["./3_topk_routing.py"]
model = dict(loss_tmc_weight=0.1, tmc_temperature=0.15)
custom_hooks = [
    dict(type="CMAWarmupHook", warmup_ratio=0.05),
    dict(type="AuxLossWarmupHook", warmup_ratio=0.2),
    dict(type="DataSkipLoggerHook"),
]
