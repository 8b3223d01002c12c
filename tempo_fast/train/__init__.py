"""Training: SFT and PIR-GRPO loops with their runtime (configs, samples, checkpoints, logging,
torchrun/FSDP2). Importing this package loads nothing heavy; import the submodules:

    from tempo_fast.train.config import SFTConfig, GRPOConfig
    from tempo_fast.train.sft import train_sft
"""
