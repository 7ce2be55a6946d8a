# Tiny ablation, row 0 (baseline, Sa2VA-like): the tiny synthetic SALMA without CMA, structure prior,
# TMC or boundary loss. Rows 1-5 add them back one at a time; row 5 is configs/tiny/salma_tiny_synthetic.py.
# Data: SALMA_SYNTH_ROOT (default data/synthetic); the distractor ablation (README here) uses
#   python tools/data/make_synthetic.py --out data/synthetic_distractor --distractor --height 128 --width 128
#   SALMA_SYNTH_ROOT=data/synthetic_distractor python tools/ablate.py configs/tiny/ablations/*.py --seeds 0 1 2
_base_ = ["../salma_tiny_synthetic.py"]
model = dict(
    grounding_encoder=dict(enable_cma=False, mask_source="none",
                           cma=dict(use_multi_token=True, topk_tokens=0, enable_mask_bias=False)),
    loss_tmc_weight=0.0,
    loss_boundary_weight=0.0,
)
