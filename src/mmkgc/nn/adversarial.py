"""Generators of modality vectors and discriminators for modality-adversarial training (methods.md §5-7, §8.7).

Every generator follows one interface: ``forward(x [B, M, D], present [B, M], noise: bool) -> [B, M - 1, D]``,
where slot 0 of ``x`` is the structural embedding ``e_s`` and slots ``1..M-1`` are the adapted modality vectors;
the output holds one generated vector per non-structural modality, directly in the adapted (entity) space.

* :class:`ModalityGenerator` -- AdaMF-MAT (Zhang et al., LREC-COLING 2024, §6.4): one MLP per modality,
  ``G_m([z; e_s]) = W_2 LeakyReLU(W_1 [z; e_s] + b_1) + b_2``.
* :class:`SharedModalityGenerator` -- NativE (Zhang et al., SIGIR 2024, §7): one MLP conditioned on all modalities
  ``[z; e_s; e_1; ...] -> hidden -> LeakyReLU -> (M - 1) D``, chunked per modality.
* :class:`MoIEnGenerator` -- AFME's structure-guided generator (Wang et al., Neural Networks 2025, §5.2):
  ``e_mod = W_e [e_s; z]``, ``h_m^(0) = σ(W_d (e_mod ⊙ x_m) + b_d)``, then multi-layer self-attention over the
  token sequence ``[e_s, h_1^(0), ...]`` and one output head per modality.
* :class:`SelfAttentionDiscriminator` -- AFME's discriminator ``D(candidate_m, e_s) = σ(W_p [pool SA([e_s,
  candidate_m])] + b_p)`` (returns the logit; the sigmoid is applied by the BCE loss).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from class_resolver import ClassResolver
from torch import nn

from mmkgc.nn.fusion import ModalitySelfAttention


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    # LeakyReLU with PyTorch's default slope 0.01: the ``BaseGenerator`` of AdaMF-MAT and NativE uses
    # ``nn.LeakyReLU()`` (fidelity review A2/N4)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(), nn.Linear(hidden, out_dim))


class _Generator(nn.Module):
    """Common parts: noise width and drawing.  ``noise=False`` uses ``z = 0`` (deterministic completion)."""

    def __init__(self, dim: int, num_modalities: int, noise_dim: int):
        super().__init__()
        if num_modalities < 2:
            raise ValueError("a modality generator needs the structure and at least one modality (M >= 2)")
        self.dim, self.num_modalities, self.noise_dim = dim, num_modalities, noise_dim

    def _z(self, x: torch.Tensor, noise: bool) -> torch.Tensor:
        shape = (x.shape[0], self.noise_dim)
        return torch.randn(shape, device=x.device, dtype=x.dtype) if noise else x.new_zeros(shape)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[1] != self.num_modalities or x.shape[2] != self.dim:
            raise ValueError(f"{type(self).__name__}: expected x [B, {self.num_modalities}, {self.dim}], "
                             f"got {tuple(x.shape)}")


class ModalityGenerator(_Generator):
    """AdaMF-MAT: independent per-modality MLPs on ``[z; e_s]`` (hidden 512, LeakyReLU slope 0.01).

    :param dim: ``D``.  :param num_modalities: ``M`` (structure included).  :param noise_dim: width of ``z`` (64).
    :param hidden_dim: hidden width (512).

    Shapes: ``x [B, M, D]``, ``present [B, M]`` (unused) -> ``[B, M - 1, D]``.
    """

    synonyms = ("mat", "per_modality")

    def __init__(self, dim: int, num_modalities: int, noise_dim: int = 64, hidden_dim: int = 512):
        super().__init__(dim, num_modalities, noise_dim)
        self.nets = nn.ModuleList(_mlp(noise_dim + dim, hidden_dim, dim) for _ in range(num_modalities - 1))

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None, noise: bool = True) -> torch.Tensor:
        self._check(x)
        inp = torch.cat([self._z(x, noise), x[:, 0]], -1)
        return torch.stack([net(inp) for net in self.nets], 1)


class SharedModalityGenerator(_Generator):
    """NativE: one MLP on ``[z; e_s; x_1; ...; x_{M-1}]`` producing all modalities at once (chunked).

    Absent modalities enter as their fill vector (what the representation holds for them).

    Shapes: ``x [B, M, D]`` -> ``[B, M - 1, D]``.
    """

    synonyms = ("wgan_gp", "shared")

    def __init__(self, dim: int, num_modalities: int, noise_dim: int = 64, hidden_dim: int = 512):
        super().__init__(dim, num_modalities, noise_dim)
        self.net = _mlp(noise_dim + num_modalities * dim, hidden_dim, (num_modalities - 1) * dim)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None, noise: bool = True) -> torch.Tensor:
        self._check(x)
        out = self.net(torch.cat([self._z(x, noise), x.flatten(1)], -1))
        return out.reshape(x.shape[0], self.num_modalities - 1, self.dim)


class MoIEnGenerator(_Generator):
    """AFME MoIEn generator (methods.md §5.2, with the seed sample's bugs 1-3 fixed).

    ``e_mod = W_e [e_s; z]`` (``⊕`` read as concatenation + linear map to ``D``); per modality
    ``h_m^(0) = σ(W_d (e_mod ⊙ x_m) + b_d)`` where ``x_m`` is the entity's adapted modality vector (its fill
    vector when absent); tokens ``[e_s, h_1^(0), ..., h_{M-1}^(0)]`` pass through ``layers`` of
    :class:`~mmkgc.nn.fusion.ModalitySelfAttention`; modality ``m``'s output token goes through its own linear
    head, so every modality gets its own vector in the adapted space (the sigmoid range of ``h^(0)`` is not the
    entity range).

    Target hiding (our choice, methods.md §5 is silent): modality ``m`` is generated with its own vector hidden,
    so only the structure, the noise and the entity's *other present* modalities inform it.  Otherwise a generator
    trained to reconstruct present modalities learns to copy ``x_m``, and at completion time (``x_m`` absent: the
    fill vector) it has learned nothing it can use.  Hiding replaces ``x_m`` by the neutral element of ``⊙``: the
    target's token is ``h_m^(0) = σ(W_d e_mod + b_d)`` (the paper's formula with ``x_m = 1``), so the output depends
    on ``e_s`` and ``z`` through ``W_e`` and ``W_d`` for every entity, also when it has no other modality
    (``M = 2``, structure + text; zeroing ``x_m`` made ``z``, ``W_e`` and ``W_d`` inert there, fidelity review
    F1).  The target's token is masked as a key (it is the query whose output is read), and so is every absent
    modality's token (methods.md §5.7).  One attention pass per generated modality.

    Shapes: ``x [B, M, D]``, ``present [B, M]`` (``None``: all present) -> ``[B, M - 1, D]``.
    """

    def __init__(self, dim: int, num_modalities: int, noise_dim: int = 64, layers: int = 2, heads: int = 4):
        super().__init__(dim, num_modalities, noise_dim)
        self.condition = nn.Linear(dim + noise_dim, dim)
        self.modality_in = nn.Linear(dim, dim)
        self.attention = ModalitySelfAttention(dim, layers, heads)
        self.heads = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_modalities - 1))

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None, noise: bool = True) -> torch.Tensor:
        self._check(x)
        if present is None:
            present = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        present = present.clone()
        present[:, 0] = True  # the structural token is always a key
        e_mod = self.condition(torch.cat([x[:, 0], self._z(x, noise)], -1)).unsqueeze(1)
        outputs = []
        slots = torch.arange(self.num_modalities - 1, device=x.device).view(1, -1, 1)
        for i, head in enumerate(self.heads):
            m = i + 1
            # the target's own vector is hidden: replaced by 1, so its token is σ(W_d e_mod + b_d)
            h_in = torch.where(slots == i, torch.ones_like(x[:, 1:]), x[:, 1:])
            h0 = torch.sigmoid(self.modality_in(e_mod * h_in))
            keys = present.clone()
            keys[:, m] = False
            tokens, _ = self.attention.encode(torch.cat([x[:, :1], h0], 1), keys)
            outputs.append(head(tokens[:, m]))
        return torch.stack(outputs, 1)


class SelfAttentionDiscriminator(nn.Module):
    """AFME discriminator on a (modality candidate, structural embedding) pair: self-attention over the two
    tokens ``[e_s, c_m]`` plus a learned modality-type embedding, mean-pooled, then ``W_p [·] + b_p``.

    The seed sample's bugs (2D-sized input for a D-sized attention, a one-argument call, GP between fake and
    fake) are not reproduced; with the BCE objective the sigmoid lives in the loss (``logsigmoid``).

    :param dim: ``D``.  :param num_modalities: ``M`` (structure included).  :param layers, heads: attention size.

    Shapes: ``candidate [B, D]``, ``structure [B, D]``, ``modality`` int index in ``[0, M - 1)`` -> logits ``[B]``.
    """

    def __init__(self, dim: int, num_modalities: int, layers: int = 1, heads: int = 4):
        super().__init__()
        self.type_embedding = nn.Parameter(torch.zeros(num_modalities, dim))
        nn.init.normal_(self.type_embedding, std=0.02)
        self.attention = ModalitySelfAttention(dim, layers, heads)
        self.out = nn.Linear(dim, 1)

    def forward(self, candidate: torch.Tensor, structure: torch.Tensor, modality: int) -> torch.Tensor:
        tokens = torch.stack([structure + self.type_embedding[0], candidate + self.type_embedding[modality + 1]], 1)
        pooled, _ = self.attention(tokens)
        return self.out(pooled).squeeze(-1)


#: The modality generators by name: ``per_modality`` / ``mat`` (:class:`ModalityGenerator`), ``shared`` /
#: ``wgan_gp`` (:class:`SharedModalityGenerator`), ``moien`` (:class:`MoIEnGenerator`), the values of
#: ``training.adversarial.generator`` and of its method ``kind``; every one is constructed as
#: ``cls(dim, num_modalities, **options)`` (:func:`make_generator` passes each the options its constructor takes).
generator_resolver: ClassResolver[_Generator] = ClassResolver(
    [ModalityGenerator, SharedModalityGenerator, MoIEnGenerator], base=_Generator, suffix="Generator",
    location="mmkgc.nn.adversarial.generator_resolver",
)


def make_generator(name: str, dim: int, num_modalities: int, **options: Any) -> _Generator:
    """The generator ``name`` of :data:`generator_resolver` for ``D = dim`` and ``M = num_modalities``.

    ``options`` may hold every generator's options at once (``noise_dim``, ``hidden_dim``, ``layers``, ``heads``):
    each class receives only those its constructor names, so one adversarial config section builds any of them.

    :raises KeyError: ``name`` is not a registered generator (class-resolver's message lists the valid names).
    """
    cls = generator_resolver.lookup(name)
    accepted = inspect.signature(cls).parameters
    return cls(dim, num_modalities, **{k: v for k, v in options.items() if k in accepted})
