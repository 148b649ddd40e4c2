"""mmkgc.nn: building blocks (scorers, adapters, fusion, encoders) with shapes in their docstrings.

Each component family has a resolver (``class_resolver.ClassResolver``, as PyKEEN): ``scorers.scorer_resolver``,
``fusion.fusion_resolver``, ``adapters.adapter_resolver``, ``adversarial.generator_resolver``.  The compiled CPU
kernels are real source files under ``nn/kernels/`` (built by :mod:`mmkgc.nn.kernels`).
"""

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
