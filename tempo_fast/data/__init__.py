"""Grounding data: QVHighlights and Charades-STA loaders, the synthetic grounding set and PIR
(irrelevant / partially irrelevant) sample construction.

Names are resolved on first use.
"""
import importlib

_EXPORTS = {
    # records.py / loaders.py
    "GroundingRecord": "loaders", "AnnotationError": "loaders",
    "load_qvhighlights": "loaders", "load_charades": "loaders", "load_annotations": "loaders",
    # synthetic.py
    "SynthConfig": "synthetic", "generate_synthetic": "synthetic",
    # pir.py
    "PIRConfig": "pir", "make_pir_samples": "pir",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tempo_fast.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
