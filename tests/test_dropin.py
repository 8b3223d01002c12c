"""Drop-in use of tempo_fast.ops in a GRPO trainer: the README's example (a TRL-style loss written
out in plain torch, then the same step through fused_grpo_loss) and the TRL GRPOTrainer patch."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from tempo_fast.ops import fused_grpo_loss  # noqa: E402

VOCAB = 37


def tiny_causal_lm(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=1)
    return transformers.Qwen2ForCausalLM(cfg).eval()


def trl_style_loss(model, input_ids, completion_ids, mask, old, ref, adv, beta, eps_low, eps_high):
    """What a TRL-style trainer writes: full logits, log_softmax, gather, clipped ratio, k3 KL, 'grpo' mean."""
    length = completion_ids.size(1)
    logits = model(input_ids=input_ids).logits[:, -length - 1:-1]
    logps = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids[..., None])[..., 0]
    ratio = torch.exp(logps - old)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv[:, None], clipped * adv[:, None])
    per_token = per_token + beta * (torch.exp(ref - logps) - (ref - logps) - 1)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def test_readme_example_matches_trl_style_loss_and_gradients():
    model = tiny_causal_lm()
    batch, prompt, length = 3, 5, 7
    input_ids = torch.randint(2, VOCAB, (batch, prompt + length))
    completion_ids = input_ids[:, prompt:]
    mask = (torch.arange(length)[None] < torch.tensor([7, 4, 1])[:, None]).float()
    old = -3.5 + 0.3 * torch.randn(batch, length)
    ref = -3.5 + 0.3 * torch.randn(batch, length)
    adv = torch.tensor([1.0, -0.5, 0.25])
    params = [p for p in model.parameters() if p.requires_grad]

    expected = trl_style_loss(model, input_ids, completion_ids, mask, old, ref, adv, 0.04, 0.2, 0.28)
    expected_grads = torch.autograd.grad(expected, params)

    # The drop-in: hidden states instead of logits, one call for the loss.
    out = model(input_ids=input_ids, output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1][:, -length - 1:-1]
    loss, stats = fused_grpo_loss(hidden, model.lm_head.weight, completion_ids, old, adv, mask,
                                  ref_logps=ref, beta=0.04, epsilon_low=0.2, epsilon_high=0.28, backend="torch")
    grads = torch.autograd.grad(loss, params, allow_unused=True)

    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    for p, g, e in zip(params, grads, expected_grads):
        torch.testing.assert_close(torch.zeros_like(p) if g is None else g, e, rtol=1e-4, atol=1e-6)
    assert set(stats) >= {"kl"}


@pytest.fixture(scope="module")
def grpo_trainer(tmp_path_factory):
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from trl import GRPOConfig, GRPOTrainer

    words = [chr(ord("a") + i) for i in range(VOCAB - 3)]
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>"] + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                                     eos_token="<eos>", unk_token="<unk>")
    folder = tmp_path_factory.mktemp("tiny_qwen2")
    tiny_causal_lm().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    args = GRPOConfig(output_dir=str(folder / "out"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=6, use_cpu=True, report_to=[], beta=0.04, logging_steps=1,
                      max_steps=1, save_strategy="no", epsilon_high=0.28, bf16=False)
    data = Dataset.from_dict({"prompt": ["a b c", "d e f", "g h", "i j k l"]})
    reward = lambda completions, **kw: [float(len(c) % 3) for c in completions]  # noqa: E731
    return GRPOTrainer(model=str(folder), reward_funcs=[reward], args=args, train_dataset=data,
                       processing_class=tokenizer)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo"])
def test_trl_trainer_patch_gives_trl_loss_and_gradients(grpo_trainer, loss_type):
    from tempo_fast.integrations.trl import _fused_compute_loss

    trainer = grpo_trainer
    trainer.loss_type = loss_type
    torch.manual_seed(1)
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    expected = trainer._compute_loss(trainer.model, inputs)
    expected_grads = torch.autograd.grad(expected, params, allow_unused=True)
    got = _fused_compute_loss(trainer, trainer.model, inputs)
    got_grads = torch.autograd.grad(got, params, allow_unused=True)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    for g, e in zip(got_grads, expected_grads):
        if e is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-5)


def test_trl_patch_refuses_options_it_cannot_reproduce(grpo_trainer):
    from tempo_fast.integrations.trl import use_fused_grpo_loss

    saved = grpo_trainer.loss_type
    grpo_trainer.loss_type = "cispo"
    try:
        with pytest.raises(ValueError, match="cispo"):
            use_fused_grpo_loss(grpo_trainer)
    finally:
        grpo_trainer.loss_type = saved
