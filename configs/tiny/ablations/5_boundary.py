# + boundary loss: Sobel edges of the prediction vs the GT. Equals configs/tiny/salma_tiny_synthetic.py.
_base_ = ["./4_tmc.py"]
model = dict(loss_boundary_weight=0.05)
