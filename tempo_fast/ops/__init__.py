"""Drop-in kernels for GRPO trainers and video sampling.

Every op is one file here: its docstring (semantics, shapes, dtypes), the torch reference
(`*_ref`, the spec and test oracle), input checks, the autograd.Function and the public
function. Its Triton kernels live in `_triton/<op>.py` and its numba kernels in
`_numba/<op>.py`, imported only when that backend runs, so `import tempo_fast.ops` needs only
torch. Each public op takes `backend=None | "torch" | "triton" | "numba"`; None picks Triton
for CUDA tensors and numba (where it beats torch) or torch for CPU tensors.
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
