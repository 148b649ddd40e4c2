"""Modality-adversarial fused KGE models: AdaMF-MAT, NativE and AFME (methods.md §5, §6, §7, §8.7).

One model class, three objectives chosen by ``training.adversarial.kind``; all share the fused representation
(:class:`~mmkgc.models.fused.FusedRepresentation`), the RotatE scorer, the fake-triple construction and the
alternating schedule (main/critic step, then the generator step over the generator's parameters only, see
:class:`~mmkgc.models.auxiliary.AuxiliaryStep`).

Fake triples (all three methods): for a positive ``(h, r, t)`` the generator replaces the non-structural
modality vectors of ``h`` and/or ``t`` (structure kept), the fused fake entity ``ĥ`` / ``t̂`` is scored under
``r``: ``f(ĥ, r, t)``, ``f(h, r, t̂)``, ``f(ĥ, r, t̂)`` (``fake_types``).

* ``mat`` (AdaMF-MAT, §6.4): main step ``L_KGC + μ Σ_fakes L_sig(f+, f_fake)`` (fakes as negatives, one weight per
  positive: the released code's across-batch softmax is ``fake_weighting: across_batch``); generator step
  ``Σ_fakes L_sig(f_fake, f+)`` (fakes made plausible).
* ``wgan_gp`` (NativE, §7): the KGC scorer is the critic; main step
  ``L_KGC + μ Σ_fakes (mean f_fake − mean f+) + μ λ_gp GP`` with the gradient penalty on head interpolates
  ``α h + (1 − α) ĥ`` (``gp_target: entity``; constant with a RotatE critic, see :meth:`gradient_penalty`) or on
  the head's modality vectors (``gp_target: modality``); generator step ``Σ_fakes mean(γ − f_fake) / |fakes|``.
* ``moien`` (AFME, §5): MoIEn generator completing absent modalities (noise-free output, detached in the main
  step), a self-attention discriminator (own step, BCE on real vs generated modality vectors of entities that
  have the modality), generator step ``λ_adv BCE(D(fake), real) + λ_rec ||G - x_m||²`` on present modalities
  (+ the WGAN critic terms of the fakes when ``μ > 0`` in the main step, and ``μ Σ mean(γ − f_fake) / |fakes|`` in the
  generator step).

One generator pass per batch: the first step of a batch that needs generated modalities (the main step
when ``μ > 0``, else the discriminator or generator step) runs the generator once, with noise, on the batch's distinct
head/tail entities (:class:`_BatchGeneration`: inputs detached, graph over the generator's parameters only, in the
parameters' precision, outside autocast). The main step and the discriminator step use the output detached, the
generator step differentiates through it; the critic's and discriminator's scores of the fakes are recomputed with
their parameters as updated by their own steps (the fused entities, the relation embeddings, ``D``), while the
generator's inputs are those the main step saw (see docs/methods.md "One generator pass per batch"). The cache is
keyed on the batch positives (value equality), dropped at the start of every main step and after every generator
step, and never copied or checkpointed. The noise-free completion of absent modalities (AFME) is a separate,
detached pass on the rows that have an absent modality only.

Schedule: by default every batch runs the main step with its fake term, then the discriminator (AFME) and generator
steps.  ``training.adversarial.every: k`` runs the adversarial part (fake term, discriminator and generator steps) on
batches ``0, k, 2k, ...`` of the run only; the other batches are plain KGC steps (the count is a checkpointed buffer).

Gradients: the main (critic) step sees the generated vectors detached: the fake scores train the KGC model
(structure, adapters, fusion, relations), never the generator -- a deliberate difference from the released
AdaMF-MAT/NativE code, whose D step back-propagates the fake scores through the generator into the embeddings
(docs/methods.md).  The generator and discriminator steps differentiate only their own parameters
(:class:`~mmkgc.models.auxiliary.AuxiliaryStep` uses ``torch.autograd.grad`` over its group).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from mmkgc.models.fused import FusedKGEModel, FusedRepresentation
from mmkgc.nn.adversarial import SelfAttentionDiscriminator, make_generator
from mmkgc.nn.scorers import RotatE
from mmkgc.losses import SelfAdversarialSigmoidLoss
from mmkgc.models.auxiliary import AuxiliaryStep

if TYPE_CHECKING:  # the annotation only: the model reads plain attributes, it never imports the config layer
    from mmkgc.config import AdversarialConfig


@dataclass
class _BatchGeneration:
    """One batch's generated modality vectors (see the module docstring).

    ``positives [B, 3]`` (the key, a copy); ``inverse [2B]``: row in the distinct entities of each head, then each
    tail; ``x [U, M, D]``: the distinct entities' real (uncompleted) components, detached, in the parameters'
    dtype (computed outside autocast); ``present [U, M]``: their true presence; ``generated [U, M - 1, D]``: the
    generator's noisy output, with a graph over the generator's parameters only (none when generated under ``no_grad``).
    """

    positives: torch.Tensor
    inverse: torch.Tensor
    x: torch.Tensor
    present: torch.Tensor
    generated: torch.Tensor

    def matches(self, positives: torch.Tensor) -> bool:
        return (self.positives.shape == positives.shape and self.positives.device == positives.device
                and bool(torch.equal(self.positives, positives)))


class _GenerationCache:
    """Holder of the current batch's :class:`_BatchGeneration`; a copy (``deepcopy``, pickling) is empty, so a
    model copied mid-batch never carries a foreign autograd graph."""

    def __init__(self) -> None:
        self.value: _BatchGeneration | None = None

    def __deepcopy__(self, memo) -> "_GenerationCache":
        return _GenerationCache()

    def __getstate__(self) -> dict:
        return {"value": None}


class AdversarialFusedModel(FusedKGEModel):
    """A fused KGE model with a modality generator (and, for ``moien``, a discriminator).

    :param adversarial: the ``training.adversarial`` section.
    :param adversarial_temperature: ``α`` of the self-adversarial sigmoid loss (for the ``mat`` fake terms with
        ``fake_weighting: across_batch``).

    Warns (``UserWarning``) when the gradient penalty is on (``wgan_gp``, ``gp_weight > 0``) on interpolated
    entity vectors with a RotatE critic: it is then a constant (see :meth:`gradient_penalty`).
    """

    def __init__(self, num_entities: int, num_relations: int, scorer: nn.Module,
                 representation: FusedRepresentation, adversarial: AdversarialConfig,
                 adversarial_temperature: float = 2.0):
        super().__init__(num_entities, num_relations, scorer, representation)
        self.adv = adversarial
        dim, m = representation.dim, len(representation.modality_names)
        self.generator = make_generator(adversarial.generator, dim, m, noise_dim=adversarial.noise_dim,
                                        hidden_dim=adversarial.hidden_dim, layers=adversarial.layers,
                                        heads=adversarial.heads)
        self.discriminator = (SelfAttentionDiscriminator(dim, m, adversarial.discriminator_layers, adversarial.heads)
                              if adversarial.kind == "moien" else None)
        self.fake_loss = SelfAdversarialSigmoidLoss(adversarial_temperature)
        #: generator updates taken so far, kept only when completion waits for them (``complete_after_steps > 0``):
        #: a buffer, so checkpoints carry it and a resumed run keeps its schedule, while the checkpoints of every
        #: other configuration keep the weights they always had
        self.register_buffer("generator_updates", torch.zeros((), dtype=torch.long)
                             if adversarial.complete_after_steps > 0 else None)
        #: training batches seen, kept only with ``every > 1`` (the same pattern): which batches run the
        #: adversarial part; mirrored in :attr:`_batch_count` so that no step reads the buffer back from a GPU
        self.register_buffer("adversarial_batches", torch.zeros((), dtype=torch.long)
                             if adversarial.every > 1 else None)
        self._batch_count: int | None = None  # None: read the buffer once (fresh model, or after loading weights)
        self._adversarial_now = True  # whether the current batch runs the adversarial part (read by _ModelStep)
        self.register_load_state_dict_post_hook(_forget_batch_count)
        self._generation = _GenerationCache()
        if adversarial.kind == "moien" and adversarial.complete_missing:
            representation.completer = self._complete
        if (adversarial.kind == "wgan_gp" and adversarial.gp_weight > 0 and adversarial.gp_target == "entity"
                and isinstance(scorer, RotatE)):
            warnings.warn(
                "training.adversarial.gp_weight has no effect with a RotatE critic and gp_target: entity: the "
                "gradient norm of a RotatE score with respect to the head entity is sqrt(d) for every input, so the "
                "penalty is the constant (sqrt(d) - 1)^2; use gp_target: modality to constrain the critic on the "
                "generated modality features (docs/methods.md, NativE)", UserWarning, stacklevel=2)

    # -------------------------------------------------------------------------------- generation
    @property
    def completing(self) -> bool:
        """Whether absent modalities are generated now: ``complete_missing`` and the generator has taken at
        least ``complete_after_steps`` updates."""
        if not self.adv.complete_missing:
            return False
        return self.generator_updates is None or int(self.generator_updates) >= self.adv.complete_after_steps

    def _complete(self, x: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Absent modality slots of ``x [B, M, D]`` replaced by the noise-free generator output (detached:
        the generator learns in its own step only); returns ``(x', all-True mask)``.  Only the rows with an absent
        modality are generated (the generator is row-wise).  Before the warm-up (``complete_after_steps``) is
        over, ``(x, present)`` unchanged: absent slots stay masked."""
        if bool(present.all()) or not self.completing:
            return x, present
        rows = (~present[:, 1:]).any(-1).nonzero(as_tuple=True)[0]
        xr, pr = x[rows], present[rows]
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            gen = self.generator(xr.detach().float(), pr, noise=False)
        filled = torch.where(pr[:, 1:].unsqueeze(-1), xr[:, 1:], gen.to(x.dtype))
        x = x.index_put((rows,), torch.cat([xr[:, :1], filled], 1))
        return x, torch.ones_like(present)

    def _generate(self, positives: torch.Tensor) -> _BatchGeneration:
        """Run the generator once for the batch (noise on) and cache the result (see the module docstring)."""
        ids, inverse = torch.unique(torch.cat([positives[:, 0], positives[:, 2]]), return_inverse=True)
        with torch.autocast(positives.device.type, enabled=False):
            with torch.no_grad():  # the generator's inputs are detached: no graph through the adapters
                x, present = self.entities.raw_components(ids)
            generated = self.generator(x, present, noise=True)
        self._generation.value = _BatchGeneration(positives.detach().clone(), inverse, x, present, generated)
        return self._generation.value

    def batch_generation(self, positives: torch.Tensor, need_graph: bool = False) -> _BatchGeneration:
        """This batch's generation: the cached one when it was made for these positives (and has a graph when
        ``need_graph``), else a new one."""
        cached = self._generation.value
        if cached is not None and cached.matches(positives) and (cached.generated.requires_grad or not need_graph):
            return cached
        with torch.enable_grad() if need_graph else torch.no_grad():
            return self._generate(positives)

    def positive_and_fake_scores(self, positives: torch.Tensor, generated: torch.Tensor, critic_grad: bool = True,
                                 components: tuple[torch.Tensor, torch.Tensor] | None = None
                                 ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        """Scores of the positives ``[B]`` and of each fake type ``[B]`` (``fake_types`` order), plus the tensors
        the gradient penalty needs.

        :param generated: ``[2B, M - 1, D]`` generated modality vectors of the heads, then the tails.
        :param critic_grad: build the graph of the real entities (main step); ``False`` (generator step) computes
            them under ``no_grad`` -- the fakes keep their graph through ``generated``.
        :param components: ``(x [2B, M, D], present [2B, M])`` of the heads, then the tails, when the caller has them
            with the current parameters (the main step reuses those of its scoring path); else computed here.
        """
        b = positives.shape[0]
        rel = positives[:, 1]
        ids = torch.cat([positives[:, 0], positives[:, 2]])
        relation = rel.repeat(2) if self.relation_aware else None
        with torch.set_grad_enabled(critic_grad and torch.is_grad_enabled()):
            x, present = self.entities.components(ids) if components is None else components
            real, _ = self.entities.fuse(x, present, relation)
        fx = torch.cat([x[:, :1], generated.to(x.dtype)], 1)
        fake, _ = self.entities.fuse(fx, torch.ones_like(present), relation)
        h, t, fh, ft = real[:b], real[b:], fake[:b], fake[b:]
        r = self.relations(rel)
        score = self.scorer.score_hrt
        fakes = []
        for kind in self.adv.fake_types:
            if kind == "head":
                fakes.append(score(fh, r, t))
            elif kind == "tail":
                fakes.append(score(h, r, ft))
            else:
                fakes.append(score(fh, r, ft))
        vecs = {"h": h, "t": t, "fake_h": fh, "r": r, "x_h": x[:b], "generated_h": generated[:b],
                "relation_h": rel if relation is not None else None}
        return score(h, r, t), fakes, vecs

    def _start_batch(self) -> bool:
        """Count a training batch and say whether it runs the adversarial part (``training.adversarial.every``):
        batches ``0, every, 2 every, ...`` of the run do.  Always ``True`` with ``every == 1``."""
        if self.adversarial_batches is None:
            return True
        if self._batch_count is None:
            self._batch_count = int(self.adversarial_batches)
        now = self._batch_count % self.adv.every == 0
        self._batch_count += 1
        self.adversarial_batches.fill_(self._batch_count)
        return now

    # -------------------------------------------------------------------------------- main (D / critic) step
    def _mat_fake_term(self, positive: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``L_sig(p, n)`` with the fake as the negative: weight 1 per positive, or the released across-batch
        softmax (``fake_weighting: across_batch``)."""
        neg = fake.reshape(-1, 1) if self.adv.fake_weighting == "per_positive" else fake.reshape(1, -1)
        return self.fake_loss(positive, neg)

    def negative_sampling_loss(self, positives, negative_entities, tail_corrupted, loss_fn):
        self._generation.value = None  # a new batch: never reuse a previous one's generation
        if self.training and torch.is_grad_enabled():  # a training batch: counted for ``every``
            self._adversarial_now = self._start_batch()
        mu = self.adv.mu if self._adversarial_now else 0.0
        # the fake term needs the real components of the positives' heads and tails: the relation-aware scoring path
        # has computed them (with the same parameters, in the same graph) for its distinct entities; reuse them
        self.keep_batch_components = mu != 0.0
        try:
            loss, terms = super().negative_sampling_loss(positives, negative_entities, tail_corrupted, loss_fn)
        finally:
            self.keep_batch_components = False
            kept, self.batch_components = self.batch_components, None
        if mu == 0.0:  # AdaMF-MAT as released: the fake term is multiplied by zero, skip computing it
            return loss, terms
        components = kept[1:] if kept is not None and kept[0] is positives else None
        gen = self.batch_generation(positives, need_graph=torch.is_grad_enabled())
        pos, fakes, vecs = self.positive_and_fake_scores(positives, gen.generated.detach()[gen.inverse],
                                                         components=components)
        pos, fakes = pos.float(), [f.float() for f in fakes]
        if self.adv.kind == "mat":
            adv = sum(self._mat_fake_term(pos, f) for f in fakes)
        else:
            adv = sum(f.mean() - pos.mean() for f in fakes)
            if self.adv.kind == "wgan_gp" and self.adv.gp_weight > 0:
                gp = self.gradient_penalty(vecs)
                terms["gradient_penalty"] = gp.detach()
                adv = adv + self.adv.gp_weight * gp
        terms["adversarial"] = adv.detach()
        return loss + mu * adv, terms

    def gradient_penalty(self, vecs: dict[str, torch.Tensor], alpha: torch.Tensor | None = None) -> torch.Tensor:
        """WGAN-GP penalty ``mean_b((‖∂f(ĩ_b, r_b, t_b)/∂ĩ_b‖₂ − 1)²)`` (Gulrajani et al. 2017; NativE §7).

        * ``gp_target: entity`` (NativE): ``ĩ = α h + (1 − α) ĥ``, the fused real and fake head vectors ``[B, D]``.
          With RotatE, ``f = γ − Σ_k |h_k ∘ r_k − t_k|`` and each complex coordinate contributes a unit vector to
          ``∂f/∂h``, so ``‖∂f/∂ĩ‖₂ = √d`` for every input: the penalty is the constant ``(√d − 1)²`` and carries no
          gradient (a warning is raised at construction).
        * ``gp_target: modality``: ``ĩ = α x_m + (1 − α) G_m`` for the head's non-structural modality vectors
          ``[B, M − 1, D]`` (real as the fusion sees them vs generated), fused with the head's structural vector
          and scored; the norm is over all modality coordinates of a positive.  The gradient passes through the
          fusion weights, so the penalty depends on the critic's parameters.

        ``α ~ U(0, 1)`` per positive (``alpha [B]`` to fix it).  The interpolates are detached inputs; the penalty
        is differentiable with respect to the critic (``create_graph``).
        """
        h = vecs["h"]
        if alpha is None:
            alpha = torch.rand(h.shape[0], device=h.device, dtype=torch.float32)
        if self.adv.gp_target == "entity":
            a = alpha.to(h.dtype).unsqueeze(-1)
            inter = (a * h.detach() + (1 - a) * vecs["fake_h"].detach()).requires_grad_(True)
            head = inter
        else:
            x = vecs["x_h"]
            a = alpha.to(x.dtype).view(-1, 1, 1)
            inter = (a * x[:, 1:].detach() + (1 - a) * vecs["generated_h"].detach().to(x.dtype)).requires_grad_(True)
            tokens = torch.cat([x[:, :1].detach(), inter], 1)
            present = torch.ones(tokens.shape[:-1], dtype=torch.bool, device=tokens.device)
            head, _ = self.entities.fuse(tokens, present, vecs["relation_h"])
        with torch.enable_grad():
            f = self.scorer.score_hrt(head, vecs["r"], vecs["t"])
            (grad,) = torch.autograd.grad(f.sum(), inter, create_graph=True)
        return ((grad.float().flatten(1).norm(dim=-1) - 1.0) ** 2).mean()

    # -------------------------------------------------------------------------------- auxiliary steps
    def generator_loss(self, positives: torch.Tensor) -> torch.Tensor:
        """The generator step's objective on the batch positives ``[B, 3]`` (see the module docstring); uses the
        batch's generation (made here when the main step made none) and drops it afterwards."""
        try:
            gen = self.batch_generation(positives, need_graph=True)
            kind = self.adv.kind
            loss = positives.new_zeros((), dtype=torch.float32)
            if kind in ("mat", "wgan_gp") or self.adv.mu > 0:
                pos, fakes, _ = self.positive_and_fake_scores(positives, gen.generated[gen.inverse],
                                                              critic_grad=False)
                if kind == "mat":
                    loss = loss + sum(self.fake_loss(f.float(), pos.float().detach().reshape(-1, 1)) for f in fakes)
                else:
                    weight = 1.0 if kind == "wgan_gp" else self.adv.mu
                    margin = float(getattr(self.scorer, "margin", 0.0))
                    loss = loss + weight * sum((margin - f.float()).mean() for f in fakes) / len(fakes)
            if kind == "moien":
                loss = loss + self._moien_generator_terms(gen)
            return loss
        finally:
            self._generation.value = None

    def _counted_generator_loss(self, positives: torch.Tensor) -> torch.Tensor:
        """:meth:`generator_loss`, counting the update in :attr:`generator_updates` (the completion schedule)."""
        if self.generator_updates is not None:
            self.generator_updates += 1
        return self.generator_loss(positives)

    def _moien_generator_terms(self, gen: _BatchGeneration) -> torch.Tensor:
        """``Σ_m [λ_rec mean ‖G_m − x_m‖² + λ_adv mean(−log σ(D(G_m, e_s)))]`` over the batch's distinct entities
        that have modality ``m`` (the discriminator's logits recomputed with its current parameters)."""
        x, present, generated = gen.x, gen.present, gen.generated
        loss = generated.new_zeros(())
        for j in range(generated.shape[1]):
            have = present[:, j + 1]
            if not bool(have.any()):
                continue
            g, real = generated[have, j], x[have, j + 1]
            loss = loss + self.adv.reconstruction_weight * ((g - real) ** 2).sum(-1).mean()
            logits = self.discriminator(g, x[have, 0], j)
            loss = loss + self.adv.adversarial_weight * F.softplus(-logits).mean()  # -log σ(D(fake))
        return loss

    def discriminator_loss(self, positives: torch.Tensor) -> torch.Tensor:
        """AFME discriminator: ``Σ_m [mean(−log σ(D(x_m, e_s))) + mean(−log(1 − σ(D(G_m, e_s))))]``, real modality
        vectors (label 1) vs the batch's generated ones (label 0, detached), per modality, on the batch's distinct
        entities that have the modality."""
        gen = self.batch_generation(positives, need_graph=True)  # with its graph: the generator step reuses it
        x, present, generated = gen.x, gen.present, gen.generated.detach()
        loss = x.new_zeros(())
        for j in range(generated.shape[1]):
            have = present[:, j + 1]
            if not bool(have.any()):
                continue
            s = x[have, 0]
            loss = loss + F.softplus(-self.discriminator(x[have, j + 1], s, j)).mean() \
                + F.softplus(self.discriminator(generated[have, j], s, j)).mean()
        return loss

    def auxiliary_steps(self, training) -> list[AuxiliaryStep]:
        steps: list[AuxiliaryStep] = []
        if self.discriminator is not None:
            steps.append(_ModelStep("discriminator", self.discriminator.parameters(),
                                    self.adv.discriminator_lr or self.adv.generator_lr, self.discriminator_loss,
                                    self))
        steps.append(_ModelStep("generator", self.generator.parameters(), self.adv.generator_lr,
                                self._counted_generator_loss, self))
        return steps


class _ModelStep(AuxiliaryStep):
    """An auxiliary step whose loss is a model method of the batch positives (moved to the model's device)."""

    def __init__(self, name: str, parameters, lr: float, loss_of: Callable[[torch.Tensor], torch.Tensor],
                 model: nn.Module):
        super().__init__(name, parameters, lr)
        self.loss_of = loss_of
        self.model = model

    def loss(self, positives: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.loss_of(positives.to(device))

    def step(self, *tensors: torch.Tensor, **kwargs) -> dict[str, float | torch.Tensor]:
        """:meth:`AuxiliaryStep.step`, skipped (no update, ``{}``) on a batch that the model's main step ran
        without its adversarial part (``training.adversarial.every > 1``)."""
        if not getattr(self.model, "_adversarial_now", True):
            return {}
        return super().step(*tensors, **kwargs)


def _forget_batch_count(module: AdversarialFusedModel, incompatible_keys) -> None:
    """After ``load_state_dict``: the batch count is read again from the loaded buffer (resume)."""
    module._batch_count = None
