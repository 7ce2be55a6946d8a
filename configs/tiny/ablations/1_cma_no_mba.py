# + CMA (no MBA): cross-modal attention over [SEG] + expression tokens, no structure prior, no routing.
_base_ = ["./0_baseline.py"]
model = dict(grounding_encoder=dict(enable_cma=True))
