"""SALMA: referring image/video segmentation with InternVL2.5 + SAM-2 and Mask-Biased attention.

Exact, tested pins live in requirements.txt (install with `-c constraints.txt`); the ranges here
are wide so the package also installs on GPU machines that ship other torch/transformers builds.
"""
from setuptools import find_packages, setup

setup(
    name="salma",
    version="0.1.0",
    description="Structure-Aware Language-Mask Alignment for referring segmentation",
    packages=find_packages(include=["projects", "projects.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "mmengine>=0.10.7,<0.11",
        "transformers>=5.17,<6",
        "peft>=0.17",
        "pycocotools>=2.0.7",
        "numpy>=1.26",
        "pillow>=10",
        "safetensors>=0.4",
        "tqdm>=4.66",
    ],
    extras_require={"deepspeed": ["deepspeed>=0.17,<0.19.7"]},
)
