"""The training batches and negative samplers, re-exported from :mod:`mmkgc.data.sampling`.

They moved to the data layer so that evaluation (the sampled protocol draws its candidates with
:class:`UniformNegativeSampler`) can use them without importing the training layer; this module keeps the old
import path working.
"""

from mmkgc.data.sampling import (
    BernoulliNegativeSampler,
    NegativeSample,
    NegativeSampler,
    OneToNBatch,
    OneToNBatcher,
    TripleBatcher,
    UniformNegativeSampler,
)

__all__ = [
    "NegativeSample",
    "NegativeSampler",
    "UniformNegativeSampler",
    "BernoulliNegativeSampler",
    "TripleBatcher",
    "OneToNBatch",
    "OneToNBatcher",
]
