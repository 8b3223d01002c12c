"""GRPO's rollout-to-loss plumbing: a batch of prompts -> G rollouts each -> PIR rewards and
group advantages (`collect_groups`) -> the policy's hidden states at the completions
(`completion_hidden`) -> the reference's log-probs (`reference_logprobs`) and the GRPO loss of
one group (`group_loss`). `tempo_fast.train.grpo_step` puts them together into a step.

Rollouts: the RolloutEngine decodes `engine.batch_size` prompts x G samples per forward (one
prefill of the prompts, each prompt's cache shared by its G rows); each sample draws from its own
generator (`rollout_generator`), so batching, sharding and resuming never change a completion.

The policy forward shares the prompt too: the prompt (video + query) is prefilled once at batch 1
WITH autograd, its key/value cache is expanded (a view, no copy) to the G completions, and the
completions run as one [G, T-1] batch on top of it. Backward sums the G completions' gradients
into the one prompt pass, exactly as if the prompt had been repeated G times, for 1/G of the
prompt's forward and backward work (vision encoder included). With activation checkpointing,
transformers turns the cache off inside checkpointed layers, so the prompt is then repeated G
times in one batch instead (`completion_hidden(share_prefill=False)`, same result).

The loss runs from hidden states: tempo_fast.ops.fused_grpo_loss with the LM head's weight, so the
[G, T, V] logits never exist; the reference's log-probs likewise via fused_linear_logprobs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tempo_fast.ops import fused_grpo_loss, fused_linear_logprobs, group_advantages
from tempo_fast.rewards import RewardConfig, iou_reward, parse_answer, pir_reward

RELEVANT = "relevant"


@dataclass
class Group:
    """The G rollouts of one prompt with their rewards and advantages."""

    sample: object             # a tempo_fast.train.data.Sample (prompt, record, relevance, target)
    rollout: object            # the tempo_fast.rollout.Rollout
    rewards: torch.Tensor      # [G] float32 PIR rewards
    advantages: torch.Tensor   # [G] float32, on the model's device
    ref_logps: torch.Tensor | None = None  # [G, T] reference log-probs when beta > 0
    stats: dict = field(default_factory=dict)  # iou (relevant) or refused (others), per completion


# ---------------------------------------------------------------- rollouts and rewards


def group_rewards(texts: list, sample, reward_config: RewardConfig) -> tuple[torch.Tensor, dict]:
    """PIR rewards `[G]` of the completions `texts` of `sample`, and per-completion iou / refused."""
    relevance = sample.relevance
    windows = list(sample.record.windows) if relevance == RELEVANT else []
    duration = sample.record.duration or float(sample.prompt.duration)  # the annotation's, else the video's
    rewards = pir_reward(texts, windows, relevance, duration, reward_config)
    if relevance == RELEVANT:
        stats = {"iou": iou_reward(texts, windows, duration)}
    else:
        stats = {"refused": torch.tensor([float(parse_answer(t).refused) for t in texts])}
    return rewards, stats


def rollout_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator the rollouts of a run's `index`-th sample (its place in the sample
    stream, `SampleOrder.drawn`) draw from: a function of (seed, index) only, not of the rank."""
    import numpy as np

    mixed = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed))


def collect_groups(engine, samples, num_generations: int, reward_config: RewardConfig, *,
                   scale_rewards: str = "group", generator=None, reward_fn=None) -> list[Group]:
    """Rollouts, rewards and advantages for each sample, the rollouts batched by the engine
    (`RolloutEngine.generate_many`: `engine.batch_size` prompts per forward). `generator`: one
    torch.Generator that the samples draw from in turn, or a list of one per sample (None: torch's
    default); either way a sample's completions do not depend on the batching.
    `reward_fn(texts, sample) -> ([G], stats)` replaces the PIR rewards when given (e.g. a custom
    reward)."""
    reward_fn = reward_fn or (lambda texts, sample: group_rewards(texts, sample, reward_config))
    generators = list(generator) if isinstance(generator, (list, tuple)) else [generator] * len(samples)
    if len(generators) != len(samples):
        raise ValueError(f"collect_groups: {len(generators)} generators for {len(samples)} samples "
                         "(pass one generator, or one per sample)")
    if not isinstance(generator, (list, tuple)):
        generators = generator  # one generator: generate_many draws each prompt's block in turn
    rollouts = engine.generate_many([s.prompt for s in samples], num_generations, generator=generators)
    groups = []
    for sample, rollout in zip(samples, rollouts):
        rewards, stats = reward_fn(rollout.texts, sample)
        rewards = torch.as_tensor(rewards, dtype=torch.float32).reshape(num_generations)
        advantages = group_advantages(rewards, num_generations, scale=scale_rewards)
        groups.append(Group(sample, rollout, rewards, advantages.to(rollout.completion_ids.device), stats=stats))
    return groups


# ---------------------------------------------------------------- policy forward


def completion_hidden(model, prompt, completion_ids: torch.Tensor, *, share_prefill: bool = True) -> torch.Tensor:
    """Final hidden states `[G, T, H]` that predict `completion_ids` `[G, T]` after `prompt`.

    Position t of the result is the state after prompt + completion[:t] (teacher forcing): the
    prompt's last state, then the states of completion[:, :T-1] at rotary ids next_position + t on
    all three axes (the ids the rollout engine used). `model` is a Qwen*ForConditionalGeneration;
    its base `model.model` gives hidden states after the final norm, without logits.
    """
    from transformers import DynamicCache

    from tempo_fast.model import forward_kwargs

    base = model.model
    num, width = completion_ids.shape
    length = prompt.input_ids.shape[1]
    device = prompt.input_ids.device
    tail = (prompt.next_position + torch.arange(width - 1, device=device)).view(1, 1, -1).expand(3, num, -1)
    if share_prefill:
        cache = DynamicCache(config=model.config)
        last = base(**forward_kwargs(prompt), past_key_values=cache, use_cache=True).last_hidden_state[:, -1:]
        last = last.expand(num, 1, last.shape[-1])
        if width == 1:
            return last
        for layer in cache.layers:  # the batch-1 prompt cache viewed as G rows; autograd sums them back
            layer.keys = layer.keys.expand(num, -1, -1, -1)
            layer.values = layer.values.expand(num, -1, -1, -1)
        rest = base(input_ids=completion_ids[:, :-1], position_ids=tail, past_key_values=cache,
                    use_cache=True).last_hidden_state
        return torch.cat([last, rest], dim=1)
    ids = torch.cat([prompt.input_ids.expand(num, -1), completion_ids[:, :-1]], dim=1)
    positions = torch.cat([prompt.position_ids.expand(-1, num, -1), tail], dim=-1)
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions,
                  pixel_values_videos=prompt.pixel_values_videos.repeat(num, 1),
                  video_grid_thw=prompt.video_grid_thw.repeat(num, 1))
    if prompt.second_per_grid_ts is not None:
        kwargs["second_per_grid_ts"] = prompt.second_per_grid_ts.repeat(num)
    return base(**kwargs, use_cache=False).last_hidden_state[:, length - 1:]


def _shares_prefill(model) -> bool:
    # transformers disables the KV cache inside checkpointed layers while training
    return not (model.training and any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()))


@torch.no_grad()
def reference_logprobs(ref_model, group: Group, temperature: float) -> torch.Tensor:
    """The frozen reference model's log-probs `[G, T]` of the group's completions (0 on padding)."""
    rollout = group.rollout
    hidden = completion_hidden(ref_model, group.sample.prompt, rollout.completion_ids)
    ids = torch.where(rollout.completion_mask.bool(), rollout.completion_ids, -1)
    weight = ref_model.get_output_embeddings().weight
    logps = fused_linear_logprobs(hidden.reshape(-1, hidden.shape[-1]), weight, ids.reshape(-1),
                                  temperature=temperature)
    return logps.view_as(rollout.logprobs)


def group_loss(model, group: Group, cfg, *, use_old_logps: bool, num_items=None):
    """GRPO loss `(loss, stats)` of one group under the policy `model` (differentiable)."""
    rollout = group.rollout
    hidden = completion_hidden(model, group.sample.prompt, rollout.completion_ids,
                               share_prefill=_shares_prefill(model))
    head = model.get_output_embeddings()
    weight, bias = head.weight, getattr(head, "bias", None)
    if weight.dtype != hidden.dtype:  # bf16 autocast: the head runs in the activations' dtype, as autocast would
        weight = weight.to(hidden.dtype)
        bias = None if bias is None else bias.to(hidden.dtype)
    loss_type, extra = cfg.loss_type, {}
    if loss_type == "bnpo":  # normalised by the micro-batch's tokens, not this group's
        loss_type, extra["num_items_in_batch"] = "dapo", num_items
    elif loss_type == "dapo":
        extra["num_items_in_batch"] = num_items
    elif loss_type == "dr_grpo":
        extra["max_completion_length"] = cfg.max_new_tokens
    return fused_grpo_loss(
        hidden, weight, rollout.completion_ids, rollout.logprobs if use_old_logps else None,
        group.advantages, rollout.completion_mask, bias=bias,
        temperature=cfg.temperature, ref_logps=group.ref_logps, beta=cfg.beta, loss_type=loss_type,
        epsilon_low=cfg.epsilon_low, epsilon_high=cfg.epsilon_high, delta=cfg.delta,
        importance_sampling_level=cfg.importance_sampling_level, **extra)
