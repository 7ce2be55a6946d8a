# mmengine runtime shared by every training config.

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=2000, max_keep_ckpts=2, save_last=True),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="nccl"))
# Switch TensorBoard on with: vis_backends=[dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")]
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="Visualizer", vis_backends=vis_backends)
log_processor = dict(by_epoch=False, window_size=10)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=42, deterministic=False)
