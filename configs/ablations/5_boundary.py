# + boundary loss: Sobel edges of the prediction vs the GT (weight 0.05). Equals SALMA-1B.
_base_ = ["./4_tmc.py"]
model = dict(loss_boundary_weight=0.05)
