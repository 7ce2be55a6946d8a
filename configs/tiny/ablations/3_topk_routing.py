# + top-k routing: a router keeps the 2 highest-scoring expression tokens besides [SEG].
_base_ = ["./2_mba_gate.py"]
model = dict(grounding_encoder=dict(cma=dict(topk_tokens=2)))
