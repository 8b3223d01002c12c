"""Packaging for tempo_fast: the pure-Python package and its optional extras.

Install on a CPU machine (pin torch first: another torch pulls CUDA builds):
    pip install torch==2.13.0 && pip install -e ".[dev]"
"""
from setuptools import find_packages, setup

EXTRAS = {
    # test tools (triton runs its kernels on CPU under TRITON_INTERPRET=1; tensorboard for RunConfig.tensorboard)
    "dev": ["pytest>=8", "pytest-xdist>=3", "hypothesis>=6", "numba==0.68.1", "triton>=3.0", "tensorboard"],
    # CPU kernels (numba) for the CPU paths of tempo_fast.ops; triton for the interpreter
    "cpu": ["numba==0.68.1", "triton>=3.0"],
    # video decoding and pictures (torchcodec 0.13.0 is the last CPU-only wheel)
    "video": ["torchcodec==0.13.0", "av", "matplotlib", "tqdm"],
    # models (Qwen2.5-VL / Qwen3-VL through transformers)
    "model": ["transformers==5.23.0", "tokenizers", "safetensors"],
    # reference providers measured side by side in the benchmarks
    "bench": ["liger-kernel", "trl", "matplotlib"],
}
EXTRAS["all"] = sorted({dep for deps in EXTRAS.values() for dep in deps})

setup(
    name="tempo_fast",
    version="0.1.0",
    description="Kernels and runtime for temporal video grounding with video-LLMs (Tempo-R0: SAA, ETA, PIR-GRPO)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tempo_fast", "tempo_fast.*"]),
    install_requires=["torch>=2.4", "numpy>=1.24"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["tempo-fast=tempo_fast.cli:main"]},
)
