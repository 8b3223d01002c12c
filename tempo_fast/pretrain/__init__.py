"""Pretraining of the tiny preset on the project's own synthetic clips (`tempo-fast pretrain`):
tasks (tasks.py), clips and model inputs (data.py), the loop (loop.py), held-out metrics
(evaluate.py), the release file and manifest (manifest.py), the config (config.py)."""
