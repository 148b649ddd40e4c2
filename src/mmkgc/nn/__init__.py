"""mmkgc.nn: building blocks (scorers, adapters, fusion, encoders) with shapes in their docstrings."""

from mmkgc.nn.scorers import (
    SCORERS,
    ComplEx,
    DistMult,
    RotatE,
    Scorer,
    TransE,
    TuckER,
    build_scorer,
    complex_modulus,
    pairwise_complex_l1_distance,
    pairwise_l1_distance,
    scorer_kernel_available,
)

__all__ = [
    "SCORERS",
    "ComplEx",
    "DistMult",
    "RotatE",
    "Scorer",
    "TransE",
    "TuckER",
    "build_scorer",
    "complex_modulus",
    "pairwise_complex_l1_distance",
    "pairwise_l1_distance",
    "scorer_kernel_available",
]
