"""SALMA: Structure-Aware Language-Mask Alignment (InternVL2.5 + SAM-2 referring segmentation)."""
from . import registry  # noqa: F401  (registers the ``salma`` scope)
