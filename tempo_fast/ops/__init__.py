"""Drop-in kernels for GRPO trainers and video sampling.

Every op is one file here: its docstring (semantics, shapes, dtypes), the torch reference
(`*_ref`, the spec and test oracle), input checks, the autograd.Function and the public
function. Its Triton kernels live in `_triton/<op>.py` and its numba kernels in
`_numba/<op>.py`, its native kernels (where it has them) in the repository's kernels/cpu and
kernels/cuda, built into the optional extension tempo_fast._C; each is loaded only when that
backend runs, so `import tempo_fast.ops` needs only torch. Each public op takes
`backend=None | "torch" | "triton" | "numba" | "native"` (those it has); None picks the fastest
measured for the tensor's device: native where it is built and measured fastest (saa_scores on
CPU), Triton for CUDA tensors, numba (where it beats torch) or torch for CPU tensors.
`tempo_fast._native.reason()` says why the extension is missing when it is.
"""
from .fused_grpo_loss import fused_grpo_loss
from .fused_linear_logprobs import fused_linear_logprobs, fused_linear_logprobs_ref
from .group_advantages import group_advantages, group_advantages_ref
from .grpo_loss import grpo_loss, grpo_loss_ref
from .saa_scores import saa_scores, saa_scores_ref
from .selective_logprobs import selective_logprobs, selective_logprobs_ref

__all__ = [
    "fused_grpo_loss", "fused_linear_logprobs", "fused_linear_logprobs_ref", "group_advantages",
    "group_advantages_ref", "grpo_loss", "grpo_loss_ref", "saa_scores", "saa_scores_ref",
    "selective_logprobs", "selective_logprobs_ref",
]
