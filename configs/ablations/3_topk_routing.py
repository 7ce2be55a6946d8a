# + top-k routing: a router keeps the 2 highest-scoring language tokens.
_base_ = ["./2_mba_gate.py"]
model = dict(grounding_encoder=dict(cma=dict(topk_tokens=2)))
