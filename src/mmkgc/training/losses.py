"""Deprecated location: the losses live in :mod:`mmkgc.losses` (below the models in the layering, so a model can
own its loss without importing the training layer).  This module only re-exports them for old imports."""

from mmkgc.losses import *  # noqa: F401,F403
from mmkgc.losses import SoftmaxCrossEntropyLoss, SymmetricInfoNCE, __all__  # noqa: F401
