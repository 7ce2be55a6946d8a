# The decode-rule ablation on the tiny CPU model: mask token 0 instead of the best of tokens 1-3
# by predicted IoU (configs/ablations/mask_token_first.py at real size).
_base_ = ["./5_boundary.py"]

model = dict(grounding_encoder=dict(mask_token="first"))
