"""mmkgc.nn: building blocks (scorers, adapters, fusion, encoders) with shapes in their docstrings."""

from mmkgc.nn.scorers import (
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
    scorer_resolver,
)

__all__ = [
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
    "scorer_resolver",
]
