"""mmkgc.training: batching and negative sampling, losses (trainer and steps are added by their modules)."""

from mmkgc.training.losses import (
    LOSSES,
    BCEWithLabelSmoothing,
    MarginRankingLoss,
    SelfAdversarialSigmoidLoss,
    SoftplusLoss,
    build_loss,
    l2_regularizer,
    n3_regularizer,
)
from mmkgc.training.sampling import (
    BernoulliNegativeSampler,
    NegativeSample,
    NegativeSampler,
    OneToNBatch,
    OneToNBatcher,
    TripleBatcher,
    UniformNegativeSampler,
)

__all__ = [
    "LOSSES",
    "BCEWithLabelSmoothing",
    "MarginRankingLoss",
    "SelfAdversarialSigmoidLoss",
    "SoftplusLoss",
    "build_loss",
    "l2_regularizer",
    "n3_regularizer",
    "BernoulliNegativeSampler",
    "NegativeSample",
    "NegativeSampler",
    "OneToNBatch",
    "OneToNBatcher",
    "TripleBatcher",
    "UniformNegativeSampler",
]
