# + TMC loss: [SEG] embedding vs mask-pooled SAM-2 features (InfoNCE; temperature from the tiny config).
_base_ = ["./3_topk_routing.py"]
model = dict(loss_tmc_weight=0.1)
