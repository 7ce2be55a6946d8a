# mmengine runtime shared by every training config.

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=2000, max_keep_ckpts=2, save_last=True),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    rng_state=dict(type="RNGStateHook"),  # resume draws the same dropout / point samples
)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="nccl"))
# TensorBoard beside the json logs: SALMA_TENSORBOARD=1 in the environment (needs `pip install tensorboard`;
# events in WORK_DIR/TIMESTAMP/vis_data). Setting vis_backends in a derived config does not reach visualizer.
vis_backends = [dict(type="LocalVisBackend")]
if "{{$SALMA_TENSORBOARD:0}}" == "1":
    vis_backends.append(dict(type="TensorboardVisBackend"))
visualizer = dict(type="Visualizer", vis_backends=vis_backends)
# Keys containing 'loss' are logged as window means; the aux-loss warm-up scale is logged as it is.
log_processor = dict(by_epoch=False, window_size=10,
                     custom_cfg=[dict(data_src="aux_loss_warmup_scale", method_name="mean", window_size=1)])
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=42, deterministic=False)
