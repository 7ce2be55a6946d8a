"""bench/cost_table.py on the tiny model: CMA's FLOPs by hand, the components add up to the measured
difference between the SALMA and Sa2VA forwards, and the table shows every row."""
import os
import sys

import pytest
import torch

from projects.salma.analysis.cost import (ADDITIONS, benchmark_batch, build_benchmark_model, capture_forward,
                                          measure)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_benchmark_model(tiny=True).eval()
    return model, benchmark_batch(model, tiny=True)


def test_components_add_up_and_cma_flops_by_hand(tiny):
    model, batch = tiny
    rows = {r.name: r for r in measure(model, batch, device=torch.device("cpu"), reps=1)}
    assert list(rows) == ["InternVL vision", "projector", "LLM (prefill)", "SAM-2 encoder", "structure-prior pre-pass",
                          "CMA", "language decode", "TMC + boundary", "SALMA forward (loss mode)",
                          "Sa2VA forward (baseline)"]
    # CMA: 8x8 pixels (HW = 64) attend to [null, T tokens], C = 128: q and out projections 2*HW*C*C each,
    # k over 1+T keys, v over T tokens, the router (C -> 1) over T-1 expression tokens, and attention
    # 2 * 2*HW*(1+T)*C (scores and weighted sum).
    visual, text = capture_forward(model, batch).calls["cma"][0][:2]
    hw, c, t = visual.shape[-2] * visual.shape[-1], visual.shape[1], text.shape[1]
    expected = 2 * hw * c * c * 2 + 2 * (1 + t) * c * c + 2 * t * c * c + 2 * (t - 1) * c + 4 * hw * (1 + t) * c
    assert (hw, c) == (64, 128) and rows["CMA"].flops == expected
    # what SALMA adds is exactly the difference of the two forwards' FLOPs
    added = sum(rows[name].flops for name in ADDITIONS)
    assert added == rows["SALMA forward (loss mode)"].flops - rows["Sa2VA forward (baseline)"].flops > 0
    # the high-resolution convs (1x1, C -> C/8 at 32x32 and C -> C/4 at 16x16, with bias) are in the decode
    decoder = model.grounding_encoder.sam2.mask_decoder
    conv_flops = 2 * 32 * 32 * c * (c // 8) + 2 * 16 * 16 * c * (c // 4)
    assert (decoder.conv_s0.out_channels, decoder.conv_s1.out_channels) == (c // 8, c // 4)
    with torch.no_grad():
        from projects.salma.analysis.cost import count_flops
        features = capture_forward(model, batch).calls["decode"][0][0]
        assert count_flops(lambda: decoder.conv_s0(features.high_res[0])) + count_flops(
            lambda: decoder.conv_s1(features.high_res[1])) == conv_flops
    # the components cover the forward: each counted once (the shared convs: 3.7 % of it), the rest is the
    # [SEG] projection MLP and the like
    parts = sum(r.flops for name, r in rows.items() if "forward" not in name)
    assert 0.995 * rows["SALMA forward (loss mode)"].flops <= parts <= rows["SALMA forward (loss mode)"].flops
    assert rows["CMA"].params == sum(p.numel() for p in model.grounding_encoder.cma.parameters())
    assert rows["structure-prior pre-pass"].params == 0 and all(r.latency["cpu"] > 0 for r in rows.values())


def test_cost_table_cli_prints_every_row(capsys):
    import cost_table

    table = cost_table.main(["--tiny", "--reps", "1"])
    for name in ("InternVL vision", "projector", "LLM (prefill)", "SAM-2 encoder", "structure-prior pre-pass", "CMA",
                 "language decode", "TMC + boundary", "SALMA additions", "SALMA - Sa2VA forward (measured)"):
        assert f"| {name}" in table or f"| **{name}" in table
    assert "0.8 GFLOPs, +5 ms" in table and "% of Sa2VA's forward" in table
    assert "GPU" not in table and "CPU ms" in table
