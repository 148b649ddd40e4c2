"""Training losses over scores (higher = more plausible) and embedding regularisers.

Negative-sampling losses take positive scores ``pos [B]`` and negative scores ``neg [B, K]`` (negative ``k`` of
positive ``i`` at ``neg[i, k]``); a 1-D ``neg [B]`` is read as one negative per positive.  1-N losses take
logits ``[B, N]`` and dense 0/1 targets ``[B, N]``.  Every loss returns a scalar tensor.
"""

from __future__ import annotations

import inspect
from typing import Literal

import torch
from class_resolver import ClassResolver
from class_resolver.utils import normalize_string
from torch import nn
from torch.nn import functional as F

from mmkgc.errors import ConfigError, UnknownNameError

__all__ = [
    "MarginRankingLoss",
    "SoftplusLoss",
    "SelfAdversarialSigmoidLoss",
    "BCEWithLabelSmoothing",
    "n3_regularizer",
    "l2_regularizer",
    "LOSSES",
    "build_loss",
    "loss_resolver",
]


def _pair(pos: torch.Tensor, neg: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and reshape to ``pos [B, 1]``, ``neg [B, K]``."""
    if pos.ndim == 2 and pos.shape[1] == 1:
        pos = pos[:, 0]
    if pos.ndim != 1:
        raise ValueError(f"{name}: positive scores must be [B] (or [B, 1]), got shape {tuple(pos.shape)}")
    if neg.ndim == 1:
        neg = neg[:, None]
    if neg.ndim != 2 or neg.shape[0] != pos.shape[0]:
        raise ValueError(
            f"{name}: negative scores must be [B, K] with B = {pos.shape[0]}, got shape {tuple(neg.shape)}"
        )
    return pos[:, None], neg


class MarginRankingLoss(nn.Module):
    """Pairwise margin ranking loss (Bordes et al., 2013, TransE; OpenKE ``MarginLoss``).

    ``L = mean_{i,k} max(0, margin - f+_i + f-_ik)`` over scores (higher = better); zero once every positive
    beats each of its negatives by at least ``margin``.

    :param margin: float >= 0.
    """

    def __init__(self, margin: float = 1.0):
        super().__init__()
        if margin < 0:
            raise ConfigError(f"loss 'margin': margin must be >= 0, got {margin}")
        self.margin = float(margin)

    def forward(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """:param pos: ``[B]``. :param neg: ``[B, K]``. :returns: scalar."""
        pos, neg = _pair(pos, neg, "MarginRankingLoss")
        return F.relu(self.margin - pos + neg).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class SoftplusLoss(nn.Module):
    """Logistic (softplus) loss of Trouillon et al. (2016, ComplEx): ``softplus(-f+) + softplus(f-)``.

    With ``balanced=True`` (OpenKE ``SoftplusLoss``) ``L = ½[mean_i softplus(-f+_i) + mean_{i,k} softplus(f-_ik)]``;
    with ``balanced=False`` (PyKEEN ``SoftplusLoss`` under sLCWA) every one of the ``B (1 + K)`` scores weighs the
    same: ``L = (sum_i softplus(-f+_i) + sum_{i,k} softplus(f-_ik)) / (B (1 + K))``.

    :param balanced: see above.
    """

    def __init__(self, balanced: bool = True):
        super().__init__()
        self.balanced = bool(balanced)

    def forward(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """:param pos: ``[B]``. :param neg: ``[B, K]``. :returns: scalar."""
        pos, neg = _pair(pos, neg, "SoftplusLoss")
        lp, ln = F.softplus(-pos), F.softplus(neg)
        if self.balanced:
            return 0.5 * (lp.mean() + ln.mean())
        return (lp.sum() + ln.sum()) / (lp.numel() + ln.numel())

    def extra_repr(self) -> str:
        return f"balanced={self.balanced}"


class SelfAdversarialSigmoidLoss(nn.Module):
    """Negative sampling loss with self-adversarial weights (Sun et al., 2019, RotatE, eq. 5), in OpenKE's
    ``SigmoidLoss`` form as used by AdaMF-MAT and NativE (the margin gamma lives inside the scorer).

    ``L = -½ [ mean_i log σ(f+_i) + mean_i sum_k w_ik log σ(-f-_ik) ]`` with ``w_i = softmax_k(α f-_i)``
    **detached** (no gradient flows through the weights).  ``α = None`` or ``0`` gives uniform weights
    ``1/K`` (plain negative sampling loss).

    :param adversarial_temperature: ``α`` >= 0 or ``None``.
    """

    def __init__(self, adversarial_temperature: float | None = None):
        super().__init__()
        if adversarial_temperature is not None and adversarial_temperature < 0:
            raise ConfigError(
                f"loss 'nssa': adversarial_temperature must be >= 0, got {adversarial_temperature}"
            )
        self.adversarial_temperature = None if not adversarial_temperature else float(adversarial_temperature)

    def weights(self, neg: torch.Tensor) -> torch.Tensor:
        """Detached weights of negatives ``[B, K]`` (each row sums to 1)."""
        if self.adversarial_temperature is None:
            return torch.full_like(neg, 1.0 / neg.shape[-1]).detach()
        return torch.softmax(self.adversarial_temperature * neg.detach(), dim=-1)

    def forward(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """:param pos: ``[B]`` (any shape; averaged). :param neg: ``[M, K]`` (1-D: ``[M, 1]``); the weights are a
        softmax over the last axis.  ``M`` need not equal ``B`` since the two terms are separate means, which
        lets ``neg.reshape(1, -1)`` reproduce AdaMF-MAT's across-batch weighting of fake scores (methods §6.7).
        :returns: scalar."""
        if neg.ndim == 0 or pos.numel() == 0 or neg.numel() == 0:
            raise ValueError(
                f"SelfAdversarialSigmoidLoss: need non-empty pos and neg with neg at least 1-D, got shapes "
                f"{tuple(pos.shape)} and {tuple(neg.shape)}"
            )
        if neg.ndim == 1:
            neg = neg[:, None]
        positive = F.logsigmoid(pos).mean()
        negative = (self.weights(neg) * F.logsigmoid(-neg)).sum(-1).mean()
        return -0.5 * (positive + negative)

    def extra_repr(self) -> str:
        return f"adversarial_temperature={self.adversarial_temperature}"


class BCEWithLabelSmoothing(nn.Module):
    """Binary cross-entropy for 1-N training (Dettmers et al., 2018, ConvE) with label smoothing.

    Smoothed targets for ``N`` candidates and smoothing ``ε``:

    * ``variant="standard"``: ``y' = (1 - ε) y + ε / N``;
    * ``variant="conve"`` (alias ``"imvia"``): ``y' = (1 - ε) y + 1 / N``, the form in ConvE's and IMVIA's code
      (IMVIA: ``0.9 y + 1/N``).

    ``L = mean_{b,n} BCE(s_bn, y'_bn)`` over all ``B N`` entries, with ``s`` logits (``from_logits=True``,
    numerically stable) or probabilities (``from_logits=False``, as IMVIA's ``nn.BCELoss``).

    :param label_smoothing: ``ε`` in [0, 1).
    :param variant: ``"standard"``, ``"conve"`` or ``"imvia"``.
    :param from_logits: whether inputs are logits.
    """

    def __init__(self, label_smoothing: float = 0.0, variant: Literal["standard", "conve", "imvia"] = "standard",
                 from_logits: bool = True):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"loss 'bce': label_smoothing must be in [0, 1), got {label_smoothing}")
        if variant not in ("standard", "conve", "imvia"):
            raise ConfigError(f"loss 'bce': variant must be 'standard', 'conve' or 'imvia', got {variant!r}")
        self.label_smoothing = float(label_smoothing)
        self.variant = "conve" if variant == "imvia" else variant
        self.from_logits = bool(from_logits)

    def smooth(self, targets: torch.Tensor) -> torch.Tensor:
        """Smoothed targets ``[B, N]`` (see class docstring)."""
        n = targets.shape[-1]
        eps = self.label_smoothing
        if self.variant == "standard":
            return targets * (1.0 - eps) + eps / n
        return targets * (1.0 - eps) + 1.0 / n

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """:param scores: logits or probabilities ``[B, N]``. :param targets: 0/1 ``[B, N]``. :returns: scalar."""
        if scores.shape != targets.shape or scores.ndim != 2:
            raise ValueError(
                f"BCEWithLabelSmoothing: scores and targets must both be [B, N], got {tuple(scores.shape)} "
                f"and {tuple(targets.shape)}"
            )
        y = self.smooth(targets.to(scores.dtype))
        if self.from_logits:
            return F.binary_cross_entropy_with_logits(scores, y)
        # nn.BCELoss's formula (logs clamped at -100), written out so that ConvE-style targets slightly above 1
        # (``(1 - ε) + 1/N`` for tiny N) are accepted as they are with logits.
        log_p = torch.log(scores).clamp_min(-100.0)
        log_q = torch.log1p(-scores).clamp_min(-100.0)
        return -(y * log_p + (1.0 - y) * log_q).mean()

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, variant={self.variant!r}, from_logits={self.from_logits}"


class SoftmaxCrossEntropyLoss(nn.Module):
    """Softmax cross-entropy over all entities for 1-N training (Lacroix et al., 2018, "Canonical Tensor
    Decomposition for Knowledge Base Completion", with reciprocal relations and N3).

    A query with several training answers gets the normalised multi-hot target ``y / sum(y)``, optionally
    smoothed towards the uniform distribution: ``y' = (1 - ε) y / sum(y) + ε / N``.
    ``L = mean_b ( - sum_n y'_bn log softmax(s_b)_n )``.

    :param label_smoothing: ``ε`` in [0, 1).
    """

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"loss 'softmax_ce': label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """:param scores: logits ``[B, N]``. :param targets: 0/1 ``[B, N]`` with at least one 1 per row.
        :returns: scalar.
        :raises ValueError: on shape mismatch or a row without any positive."""
        if scores.shape != targets.shape or scores.ndim != 2:
            raise ValueError(
                f"SoftmaxCrossEntropyLoss: scores and targets must both be [B, N], got {tuple(scores.shape)} "
                f"and {tuple(targets.shape)}"
            )
        targets = targets.to(scores.dtype)
        counts = targets.sum(-1, keepdim=True)
        if bool((counts <= 0).any()):
            raise ValueError("SoftmaxCrossEntropyLoss: every query needs at least one positive target")
        y = targets / counts
        if self.label_smoothing:
            y = (1.0 - self.label_smoothing) * y + self.label_smoothing / scores.shape[-1]
        return -(y * torch.log_softmax(scores, dim=-1)).sum(-1).mean()

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"


def n3_regularizer(*embeddings: torch.Tensor, weight: float = 1.0, complex_layout: bool = False) -> torch.Tensor:
    """Weighted N3 regulariser (Lacroix et al., 2018, "Canonical Tensor Decomposition for Knowledge Base
    Completion"): ``weight * sum_x sum_{b,k} |x_bk|^3 / B`` over the embeddings used in the batch.

    :param embeddings: tensors ``[B, D]`` (e.g. h, r, t of the batch); ``B`` is taken from the first.
    :param weight: the regularisation rate λ.
    :param complex_layout: if ``True``, each ``[B, 2d]`` tensor holds ``[re | im]`` and ``|x_bk|`` is the complex
        modulus of coordinate ``k`` (as in Lacroix et al. for ComplEx).
    :returns: scalar tensor.
    :raises ValueError: if no tensor is given.
    """
    if not embeddings:
        raise ValueError("n3_regularizer needs at least one embedding tensor")
    batch = max(1, embeddings[0].shape[0]) if embeddings[0].ndim else 1
    total = embeddings[0].new_zeros(())
    for x in embeddings:
        if complex_layout:
            re, im = x.chunk(2, dim=-1)
            modulus = torch.sqrt(re * re + im * im)
        else:
            modulus = x.abs()
        total = total + modulus.pow(3).sum()
    return weight * total / batch


def l2_regularizer(*embeddings: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Weighted L2 regulariser in OpenKE's form (``RotatE.regularization``, used by NativE with rate 1e-5):
    ``weight * (1/m) sum_{x} mean(x^2)`` over the ``m`` embedding tensors used in the batch.

    :param embeddings: tensors of any shape (e.g. h, t, r of the batch).
    :param weight: the regularisation rate.
    :returns: scalar tensor.
    :raises ValueError: if no tensor is given.
    """
    if not embeddings:
        raise ValueError("l2_regularizer needs at least one embedding tensor")
    return weight * sum(x.pow(2).mean() for x in embeddings) / len(embeddings)


#: Registered losses by name (aliases included).
class SymmetricInfoNCE(nn.Module):
    """Symmetric InfoNCE between two aligned batches of vectors (CLIP, Radford et al. 2021; van den Oord et al.
    2018): row ``i`` of ``a`` must match row ``i`` of ``b`` against the other rows of the batch, and vice versa.

    ``S = a bᵀ / τ``, ``L = ½ [CE(S, I) + CE(Sᵀ, I)]``.  Used by VEMP (text <-> image and anchor <-> neighbour, fixed
    ``τ = 0.07``, L2-normalised vectors; methods.md section 2.3) and IMVIA (pairs of modality alignment features,
    learnable ``τ`` initialised at 0.07, unnormalised in the public code; section 4.4).

    :param temperature: initial ``τ`` > 0.
    :param learnable: make ``τ`` a parameter.
    :param parameterization: how a learnable ``τ`` is stored: ``"log"`` (the parameter is ``log τ``, so ``τ`` stays
        positive and Adam's steps are relative) or ``"raw"`` (the parameter is ``τ`` itself, as the published IMVIA
        ``ClipLoss``, ``self.temp = nn.Parameter(torch.ones([]) * config.temp)`` in ``models/RelMoE.py``; it can
        reach 0 or go negative unless clamped).
    :param min_temperature: lower clamp of a learnable ``τ`` (the IMVIA code leaves it unclamped, so it can collapse
        towards 0).
    :param max_temperature: upper clamp of a learnable ``τ`` (``None``: none).  The published ``ClipLoss`` is
        reproduced by ``learnable=True, parameterization="raw", min_temperature=None, max_temperature=None``.
    :param normalize: L2-normalise the rows of ``a`` and ``b`` first (cosine similarities).

    ``forward(a, b, ids=None)``: optional ``ids [B]`` mark rows of the same item (e.g. the same entity twice in a
    batch); off-diagonal pairs with equal ids are then masked out as false negatives.

    Shapes: ``a [B, D]``, ``b [B, D]`` (``ids [B]`` optional) -> scalar.
    :raises ConfigError: non-positive temperature or inconsistent clamps.
    """

    def __init__(self, temperature: float = 0.07, learnable: bool = False, min_temperature: float | None = 0.01,
                 max_temperature: float | None = 100.0, normalize: bool = True,
                 parameterization: str = "log"):
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"InfoNCE temperature must be > 0, got {temperature}")
        if min_temperature is not None and max_temperature is not None and min_temperature > max_temperature:
            raise ConfigError(f"InfoNCE min_temperature {min_temperature} > max_temperature {max_temperature}")
        if parameterization not in ("log", "raw"):
            raise ConfigError(f"InfoNCE parameterization must be 'log' or 'raw', got {parameterization!r}")
        self.parameterization = parameterization if learnable else "log"
        if learnable and parameterization == "raw":
            self.raw_temperature = nn.Parameter(torch.tensor(float(temperature)))
        elif learnable:
            self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log())
        else:
            self.register_buffer("log_temperature", torch.tensor(float(temperature)).log(), persistent=False)
        self.learnable = learnable
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature
        self.normalize = normalize

    @property
    def temperature(self) -> torch.Tensor:
        """The current ``τ`` (clamped when learnable and a clamp is set)."""
        t = self.raw_temperature if self.parameterization == "raw" else self.log_temperature.exp()
        if self.learnable and (self.min_temperature is not None or self.max_temperature is not None):
            t = t.clamp(self.min_temperature, self.max_temperature)
        return t

    def forward(self, a: torch.Tensor, b: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        if a.ndim != 2 or a.shape != b.shape:
            raise ValueError(f"SymmetricInfoNCE: a and b must both be [B, D], got {tuple(a.shape)} and {tuple(b.shape)}")
        if self.normalize:
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        logits = (a @ b.T) / self.temperature
        if ids is not None:
            same = ids.unsqueeze(0) == ids.unsqueeze(1)
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
        target = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    def extra_repr(self) -> str:
        return f"learnable={self.learnable}, parameterization={self.parameterization}, normalize={self.normalize}"


LOSSES: dict[str, type[nn.Module]] = {
    "margin": MarginRankingLoss,
    "margin_ranking": MarginRankingLoss,
    "softplus": SoftplusLoss,
    "nssa": SelfAdversarialSigmoidLoss,
    "self_adversarial_sigmoid": SelfAdversarialSigmoidLoss,
    "sigmoid": SelfAdversarialSigmoidLoss,
    "bce": BCEWithLabelSmoothing,
    "bce_label_smoothing": BCEWithLabelSmoothing,
    "softmax_ce": SoftmaxCrossEntropyLoss,
    "ce": SoftmaxCrossEntropyLoss,
}


#: Every training loss by name (class name without ``Loss``, plus the :data:`LOSSES` names as synonyms):
#: ``loss_resolver.lookup("nssa")``, ``loss_resolver.make("margin", margin=9.0)``; ``mmkgc ls losses`` lists them.
loss_resolver: ClassResolver[nn.Module] = ClassResolver(
    [MarginRankingLoss, SoftplusLoss, SelfAdversarialSigmoidLoss, BCEWithLabelSmoothing, SoftmaxCrossEntropyLoss],
    base=nn.Module, suffix="Loss", location="mmkgc.losses.loss_resolver",
    synonyms={normalize_string(k): v for k, v in LOSSES.items()
              if normalize_string(k) != normalize_string(v.__name__[:-4])},
)


def build_loss(name: str, **options) -> nn.Module:
    """Create a registered loss.

    :param name: a name :data:`loss_resolver` knows (case, ``_`` and ``-`` ignored; the :data:`LOSSES` names), e.g. ``"nssa"`` (alias ``"sigmoid"``), ``"margin"``,
        ``"softplus"``, ``"bce"``.
    :param options: constructor options of that loss.
    :raises UnknownNameError: for an unknown name.
    :raises ConfigError: for an option the loss does not accept or an invalid value.
    """
    key = str(name).lower()
    try:
        cls = loss_resolver.lookup(key)
    except (KeyError, ValueError, TypeError):
        raise UnknownNameError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}") from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"loss {key!r}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}"
        )
    return cls(**options)
