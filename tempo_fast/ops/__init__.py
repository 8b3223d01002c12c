"""Drop-in kernels for GRPO trainers and video sampling.

Every op is one file here: its docstring (semantics, shapes, dtypes), the torch reference
(`*_ref`, the spec and test oracle), input checks, the autograd.Function and the public
function. Its Triton kernels live in `_triton/<op>.py` and its numba kernels in
`_numba/<op>.py`, imported only when that backend runs, so `import tempo_fast.ops` needs only
torch. Each public op takes `backend=None | "torch" | "triton" | "numba"`; None picks Triton
for CUDA tensors and numba (where it beats torch) or torch for CPU tensors.
"""
import importlib

_EXPORTS = {
    "group_advantages": "group_advantages",
    "group_advantages_ref": "group_advantages",
    "selective_logprobs": "selective_logprobs",
    "selective_logprobs_ref": "selective_logprobs",
    "fused_linear_logprobs": "fused_linear_logprobs",
    "fused_linear_logprobs_ref": "fused_linear_logprobs",
    "grpo_loss": "grpo_loss",
    "grpo_loss_ref": "grpo_loss",
    "fused_grpo_loss": "fused_grpo_loss",
    "saa_scores": "saa_scores",
    "saa_scores_ref": "saa_scores",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Resolved on first use so that one missing or broken op never breaks the others' import.
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tempo_fast.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
