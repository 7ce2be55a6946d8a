# Ablation of the decode rule: the language decode keeps SAM-2's mask token 0 (and trains its
# hypernetwork) instead of the originals' best-of-tokens-1-3 by predicted IoU. docs: README,
# "Decode-time conventions".
_base_ = ["../SALMA-1B.py"]

model = dict(grounding_encoder=dict(mask_token="first"))
