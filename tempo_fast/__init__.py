"""tempo_fast: kernels and runtime for temporal video grounding with video-LLMs (Tempo-R0).

Subpackages: `ops` (drop-in GRPO and SAA kernels), `video` (decode, SAA, ETA, model inputs),
`data` (annotations, synthetic set, PIR samples), `rewards`, `metrics`. Nothing heavy is
imported here: each subpackage is imported when used.
"""
__version__ = "0.1.0"
