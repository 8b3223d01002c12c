"""Make TRL's `GRPOTrainer` compute its loss with `tempo_fast.ops.fused_grpo_loss`.

    from trl import GRPOTrainer
    from tempo_fast.integrations.trl import use_fused_grpo_loss

    trainer = GRPOTrainer(model=..., reward_funcs=..., args=..., train_dataset=...)
    use_fused_grpo_loss(trainer)          # same loss and gradients, no [B, T, V] logits
    trainer.train()

The patched `_compute_loss` runs the policy once with `output_hidden_states=True` and
`logits_to_keep=1` (so the LM head projects one position only), takes the final hidden states
at the positions that predict the completion tokens, and hands them with the LM head's weight to
`fused_grpo_loss`, which reproduces TRL's loss for `loss_type` grpo / bnpo / dr_grpo / dapo, token
or sequence importance sampling, `epsilon_low/high`, `delta` and the k3 KL with `beta`. It logs
TRL's clip-ratio and KL metrics under the same names.

Not supported (the call raises, naming the option, rather than training something else):
other loss types, `top_entropy_quantile < 1`, the off-policy mask, vLLM importance-sampling
correction, entropy bonuses, MoE aux losses and `use_bias_correction_kl`. The `entropy` metric
is not logged (the fused op does not compute entropies).
"""
from __future__ import annotations

import types

import torch

from tempo_fast.ops import fused_grpo_loss

SUPPORTED_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo")
_PASSED_TO_MODEL = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "image_sizes",
                    "token_type_ids", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw",
                    "second_per_grid_ts")


def unsupported_options(trainer) -> list[str]:
    """The trainer settings the fused loss cannot reproduce (empty when it can)."""
    args = trainer.args
    checks = {
        f"loss_type={trainer.loss_type!r} (supported: {', '.join(SUPPORTED_LOSSES)})": trainer.loss_type not in SUPPORTED_LOSSES,
        "top_entropy_quantile < 1": getattr(trainer, "top_entropy_quantile", 1.0) < 1.0,
        "off_policy_mask_threshold": getattr(trainer, "off_policy_mask_threshold", None) is not None,
        "vllm_importance_sampling_correction": bool(getattr(trainer, "use_vllm", False)
                                                    and getattr(trainer, "vllm_importance_sampling_correction", False)),
        "entropy bonus": bool(getattr(trainer, "_entropy_bonus_enabled", False)),
        "MoE aux loss": bool(getattr(trainer, "aux_loss_enabled", False)),
        "use_bias_correction_kl": bool(getattr(args, "use_bias_correction_kl", False)),
    }
    return [name for name, bad in checks.items() if bad]


def _fused_compute_loss(self, model, inputs):
    prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
    completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
    mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
    length = completion_ids.size(1)
    extra = {k: inputs[k] for k in _PASSED_TO_MODEL if inputs.get(k) is not None}
    with self.accelerator.autocast():
        out = model(input_ids=torch.cat([prompt_ids, completion_ids], dim=1),
                    attention_mask=torch.cat([prompt_mask, completion_mask], dim=1),
                    output_hidden_states=True, logits_to_keep=1, use_cache=False, **extra)
    # The state at position i predicts token i + 1: the completion's predictors end one before the end.
    hidden = out.hidden_states[-1][:, -length - 1:-1]
    head = self.accelerator.unwrap_model(model).get_output_embeddings()
    old = inputs.get("old_per_token_logps")
    mode = "train" if self.model.training else "eval"
    num_items = inputs.get("num_items_in_batch")
    if self.loss_type == "dapo" and num_items is not None:
        # TRL's dapo normaliser: the generation batch's token count, per process and accumulation window.
        num_items = num_items.clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            num_items = num_items * self.current_gradient_accumulation_steps / self.args.steps_per_generation
    loss, stats = fused_grpo_loss(
        hidden, head.weight, completion_ids, old, inputs["advantages"], mask,
        bias=head.bias, temperature=self.temperature,
        ref_logps=inputs.get("ref_per_token_logps") if self.beta != 0.0 else None, beta=self.beta,
        loss_type=self.loss_type, epsilon_low=self.epsilon_low, epsilon_high=self.epsilon_high,
        delta=self.args.delta, importance_sampling_level=self.importance_sampling_level,
        num_items_in_batch=num_items, max_completion_length=self.max_completion_length,
    )
    if self.loss_type != "dapo" and mode == "train":
        loss = loss / self.current_gradient_accumulation_steps
    metrics = self._metrics[mode]
    for key, name in (("clip_low", "clip_ratio/low_mean"), ("clip_high", "clip_ratio/high_mean"),
                      ("clip_region", "clip_ratio/region_mean"), ("kl", "kl")):
        if key in stats and (key != "kl" or self.beta != 0.0):
            metrics[name].append(self.accelerator.reduce(stats[key].detach().float(), reduction="mean").item())
    return loss


def use_fused_grpo_loss(trainer):
    """Patch `trainer` (a trl.GRPOTrainer) in place to compute its loss with fused_grpo_loss."""
    bad = unsupported_options(trainer)
    if bad:
        raise ValueError(f"use_fused_grpo_loss: this GRPOTrainer uses {', '.join(bad)}, which the fused loss "
                         "does not reproduce; leave the trainer's own loss in place")
    trainer._compute_loss = types.MethodType(_fused_compute_loss, trainer)
    return trainer
