# + MBA (gate): the language-free SAM-2 prior gates the CMA output.
_base_ = ["./1_cma_no_mba.py"]
model = dict(grounding_encoder=dict(mask_source="pred", cma=dict(enable_mask_bias=True, mask_bias_mode="gate")))
