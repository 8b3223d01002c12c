"""Grounding data: QVHighlights and Charades-STA loaders, the synthetic grounding set and PIR
(irrelevant / partially irrelevant) sample construction."""
from .loaders import AnnotationError, Annotations, GroundingRecord, load_annotations, load_charades, load_qvhighlights
from .pir import PIRConfig, make_pir_samples
from .synthetic import SynthConfig, SynthResult, generate_synthetic, load_facts

__all__ = ["AnnotationError", "Annotations", "GroundingRecord", "PIRConfig", "SynthConfig", "SynthResult",
           "generate_synthetic", "load_annotations", "load_charades", "load_facts", "load_qvhighlights",
           "make_pir_samples"]
