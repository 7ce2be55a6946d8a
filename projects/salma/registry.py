"""The project's registries: children of mmengine's roots under the scope ``salma``.

Configs name classes by string (``type='VideoLLaVASAMModel'``) and set ``default_scope='salma'``;
mmengine's Runner then resolves models, datasets, hooks, loops and metrics here first, then in mmengine.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry("model", parent=MMENGINE_MODELS, scope="salma", locations=["projects.salma.models"])
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope="salma", locations=["projects.salma.datasets"])
DATA_SAMPLERS = Registry(
    "data sampler", parent=MMENGINE_DATA_SAMPLERS, scope="salma", locations=["projects.salma.datasets"]
)
FUNCTIONS = Registry("function", parent=MMENGINE_FUNCTIONS, scope="salma", locations=["projects.salma.datasets"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, scope="salma",
                 locations=["projects.salma.engine", "projects.salma.datasets"])
LOOPS = Registry("loop", parent=MMENGINE_LOOPS, scope="salma", locations=["projects.salma.engine"])
METRICS = Registry("metric", parent=MMENGINE_METRICS, scope="salma", locations=["projects.salma.evaluation"])
