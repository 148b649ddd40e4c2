"""Interaction functions ("scorers") of knowledge graph embedding models.

A scorer maps embeddings to plausibility scores; it owns no embedding table, because multimodal models
build entity vectors by fusing modalities.  The model creates tables of widths :attr:`Scorer.entity_dim`
and :attr:`Scorer.relation_dim` and lets the scorer initialise them (:meth:`Scorer.init_entity_`,
:meth:`Scorer.init_relation_`).

Three scoring modes, all **higher = more plausible** (distances are negated):

* :meth:`Scorer.score_hrt` -- ``h [..., De], r [..., Dr], t [..., De] -> [...]`` with broadcasting over the
  leading dimensions (positives ``[B]``; negatives ``[B, K]`` via ``h[:, None]`` etc.);
* :meth:`Scorer.score_t` -- every entity as tail: ``h [B, De], r [B, Dr], t_all [N, De] -> [B, N]``;
* :meth:`Scorer.score_h` -- every entity as head: ``h_all [N, De], r [B, Dr], t [B, De] -> [B, N]``.

``score_t``/``score_h`` equal ``score_hrt`` for every candidate.  DistMult, ComplEx and TransE-L2 use one
matrix product.  TransE-L1 and RotatE need ``sum_k |q_k - x_k|`` for every (query, candidate) pair, which a
naive broadcast computes at about 10 s per 256 DB15K queries on two CPU cores; on CPU (float32, no autograd)
these use a small C kernel (entity-blocked, vectorised over candidates, OpenMP across blocks) that is compiled
once with the system C compiler into the mmkgc cache directory and loaded with :mod:`ctypes`.  Set the
environment variable ``MMKGC_NO_COMPILE=1`` to use the eager, chunked PyTorch path instead (also used on GPU,
for float64, when gradients are required, and -- after a one-time warning -- when no compiler works).
"""

from __future__ import annotations

import abc
import ctypes
import hashlib
import inspect
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
import weakref
from pathlib import Path
from typing import ClassVar, Literal

import torch
from class_resolver import ClassResolver
from torch import nn

from mmkgc.errors import ConfigError, UnknownNameError
from mmkgc.fileio import cache_home

__all__ = [
    "ComplEx",
    "DistMult",
    "RotatE",
    "Scorer",
    "TransE",
    "build_scorer",
    "complex_l1_distance",
    "complex_modulus",
    "gathered_l1_distance",
    "gathered_mixture_l1_distance",
    "mixture_table_transposed",
    "pairwise_complex_l1_distance",
    "pairwise_l1_distance",
    "scorer_kernel_available",
    "scorer_resolver",
]

Side = Literal["head", "tail"]

#: Elements of one ``[B, chunk, d]`` temporary in the eager chunked path on CPU (2**24 floats = 64 MiB) and
#: on accelerators (2**26 floats = 256 MiB).
EAGER_CHUNK_ELEMENTS = 1 << 24
EAGER_CHUNK_ELEMENTS_ACCELERATOR = 1 << 26


# ====================================================================================== compiled kernels
_KERNEL_SOURCE = r"""
/* mmkgc scorer kernels: out[b, n] = bias - sum_k |q[k, b] - x[k, n]|  (real, TransE-L1)
 *                       out[b, n] = bias - sum_k |(qre + i qim)[k, b] - (xre + i xim)[k, n]|  (RotatE)
 * Inputs are transposed ([D, B] and [D, N], row-major) so that the innermost loop runs over contiguous
 * candidates and vectorises without horizontal reductions.  Work is split into (entity block, query block)
 * tasks; an entity block (EB candidates x D) stays in L2 while all query blocks pass over it. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define QB 4
#define VW 16
#define EB 256

static inline int64_t mmkgc_min(int64_t a, int64_t b) { return a < b ? a : b; }

static inline __attribute__((always_inline)) void mmkgc_task(
    const float* qre, const float* qim, const float* xre, const float* xim, int64_t B, int64_t N,
    int64_t D, float bias, float* out, int64_t task, int64_t nqb, const int cplx) {
  const int64_t eb = task / nqb, qb = task % nqb;
  const int64_t q0 = qb * QB, nq = mmkgc_min(QB, B - q0);
  const int64_t e_end = mmkgc_min((eb + 1) * EB, N);
  for (int64_t e0 = eb * EB; e0 < e_end; e0 += VW) {
    const int64_t ne = mmkgc_min(VW, N - e0);
    float acc[QB][VW];
    memset(acc, 0, sizeof(acc));
    if (ne == VW && nq == QB) {
      for (int64_t k = 0; k < D; k++) {
        const float* xr = xre + k * N + e0;
        const float* a = qre + k * B + q0;
        if (cplx) {
          const float* xi = xim + k * N + e0;
          const float* b = qim + k * B + q0;
#if defined(__AVX512F__)
          /* sqrt(s) = s * rsqrt(s) with one Newton step (relative error ~1e-7, about 25 % faster than
           * vsqrtps); s = 0 and s = inf are passed through exactly, NaN propagates. */
          const __m512 vr = _mm512_loadu_ps(xr), vi = _mm512_loadu_ps(xi);
          const __m512 half = _mm512_set1_ps(0.5f), three_half = _mm512_set1_ps(1.5f);
          const __m512 zero = _mm512_setzero_ps(), inf = _mm512_set1_ps(INFINITY);
#pragma GCC unroll 4
          for (int j = 0; j < QB; j++) {
            const __m512 dr = _mm512_sub_ps(vr, _mm512_set1_ps(a[j]));
            const __m512 di = _mm512_sub_ps(vi, _mm512_set1_ps(b[j]));
            const __m512 sq = _mm512_fmadd_ps(dr, dr, _mm512_mul_ps(di, di));
            const __m512 y = _mm512_rsqrt14_ps(sq);
            const __m512 sy = _mm512_mul_ps(sq, y);
            __m512 root = _mm512_mul_ps(sy, _mm512_fnmadd_ps(_mm512_mul_ps(sy, y), half, three_half));
            const __mmask16 exact = _mm512_cmp_ps_mask(sq, zero, _CMP_EQ_OQ) | _mm512_cmp_ps_mask(sq, inf, _CMP_EQ_OQ);
            root = _mm512_mask_mov_ps(root, exact, sq);
            _mm512_storeu_ps(acc[j], _mm512_add_ps(_mm512_loadu_ps(acc[j]), root));
          }
#else
#pragma GCC unroll 4
          for (int j = 0; j < QB; j++) {
#pragma omp simd
            for (int e = 0; e < VW; e++) {
              const float dr = xr[e] - a[j], di = xi[e] - b[j];
              acc[j][e] += sqrtf(dr * dr + di * di);
            }
          }
#endif
        } else {
#pragma GCC unroll 4
          for (int j = 0; j < QB; j++) {
#pragma omp simd
            for (int e = 0; e < VW; e++) acc[j][e] += fabsf(xr[e] - a[j]);
          }
        }
      }
    } else {
      for (int64_t k = 0; k < D; k++) {
        const float* xr = xre + k * N + e0;
        for (int64_t j = 0; j < nq; j++) {
          const float a = qre[k * B + q0 + j];
          if (cplx) {
            const float* xi = xim + k * N + e0;
            const float b = qim[k * B + q0 + j];
            for (int64_t e = 0; e < ne; e++) {
              const float dr = xr[e] - a, di = xi[e] - b;
              acc[j][e] += sqrtf(dr * dr + di * di);
            }
          } else {
            for (int64_t e = 0; e < ne; e++) acc[j][e] += fabsf(xr[e] - a);
          }
        }
      }
    }
    for (int64_t j = 0; j < nq; j++)
      for (int64_t e = 0; e < ne; e++) out[(q0 + j) * N + e0 + e] = bias - acc[j][e];
  }
}

void mmkgc_l1_dist(const float* q, const float* x, int64_t B, int64_t N, int64_t D, float bias,
                   float* out, int nthreads) {
  const int64_t nqb = (B + QB - 1) / QB, neb = (N + EB - 1) / EB;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t task = 0; task < neb * nqb; task++)
    mmkgc_task(q, q, x, x, B, N, D, bias, out, task, nqb, 0);
}

void mmkgc_complex_l1_dist(const float* qre, const float* qim, const float* xre, const float* xim,
                           int64_t B, int64_t N, int64_t D, float bias, float* out, int nthreads) {
  const int64_t nqb = (B + QB - 1) / QB, neb = (N + EB - 1) / EB;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t task = 0; task < neb * nqb; task++)
    mmkgc_task(qre, qim, xre, xim, B, N, D, bias, out, task, nqb, 1);
}

/* Gathered distances for training with K negatives per positive, without materialising [P, 2d] copies:
 *   out[p] = sum_k |Q[qi[p], k] - E[ei[p], k]|   (cplx: complex moduli over [re | im] rows of width 2d;
 *                                                else: absolute values over rows of width d)
 * and the gradient of that sum with respect to the difference, G[p, :] = g[p] * d/d(diff), written densely;
 * the caller scatters G into the two tables (index_add). */
void mmkgc_gather_l1(const float* Q, const int64_t* qi, const float* E, const int64_t* ei, int64_t P,
                     int64_t d, int cplx, float* out, int nthreads) {
  const int64_t w = cplx ? 2 * d : d;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t p = 0; p < P; p++) {
    const float* q = Q + qi[p] * w;
    const float* e = E + ei[p] * w;
    float acc = 0.0f;
    if (cplx) {
#pragma omp simd reduction(+:acc)
      for (int64_t k = 0; k < d; k++) {
        const float dr = q[k] - e[k], di = q[d + k] - e[d + k];
        acc += sqrtf(dr * dr + di * di);
      }
    } else {
#pragma omp simd reduction(+:acc)
      for (int64_t k = 0; k < d; k++) acc += fabsf(q[k] - e[k]);
    }
    out[p] = acc;
  }
}

void mmkgc_gather_l1_grad(const float* Q, const int64_t* qi, const float* E, const int64_t* ei,
                          const float* g, int64_t P, int64_t d, int cplx, float* G, int nthreads) {
  const int64_t w = cplx ? 2 * d : d;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t p = 0; p < P; p++) {
    const float* q = Q + qi[p] * w;
    const float* e = E + ei[p] * w;
    float* out = G + p * w;
    const float gp = g[p];
    if (cplx) {
#pragma omp simd
      for (int64_t k = 0; k < d; k++) {
        const float dr = q[k] - e[k], di = q[d + k] - e[d + k];
        const float m = sqrtf(dr * dr + di * di);
        const float scale = m > 0.0f ? gp / m : 0.0f;  /* zero subgradient at the origin */
        out[k] = scale * dr;
        out[d + k] = scale * di;
      }
    } else {
#pragma omp simd
      for (int64_t k = 0; k < d; k++) {
        const float diff = q[k] - e[k];
        out[k] = diff > 0.0f ? gp : (diff < 0.0f ? -gp : 0.0f);
      }
    }
  }
}

/* Gathered distances to mixtures (relation-conditioned fusion, negatives of a training batch):
 *   out[p] = sum_k |Q[qi[p], k] - sum_m beta[p, m] X[ei[p], m, k]|
 * with X of shape [U, M, w] (per distinct entity or (entity, relation) pair, M modality vectors) and the mixture
 * weights beta [P, M] of each occurrence; the fused vector of an occurrence is never stored. */
static inline void mmkgc_mix(const float* x, const float* b, int64_t M, int64_t w, int64_t k, float* v) {
  float s = 0.0f;
  for (int64_t m = 0; m < M; m++) s += b[m] * x[m * w + k];
  *v = s;
}

void mmkgc_gather_mix_l1(const float* Q, const int64_t* qi, const float* X, const float* beta, const int64_t* ei,
                         int64_t P, int64_t M, int64_t d, int cplx, float* out, int nthreads) {
  const int64_t w = cplx ? 2 * d : d;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t p = 0; p < P; p++) {
    const float* q = Q + qi[p] * w;
    const float* x = X + ei[p] * M * w;
    const float* b = beta + p * M;
    float acc = 0.0f;
    if (M == 2) {
      const float b0 = b[0], b1 = b[1];
      const float* x0 = x;
      const float* x1 = x + w;
      if (cplx) {
#pragma omp simd reduction(+:acc)
        for (int64_t k = 0; k < d; k++) {
          const float dr = q[k] - (b0 * x0[k] + b1 * x1[k]);
          const float di = q[d + k] - (b0 * x0[d + k] + b1 * x1[d + k]);
          acc += sqrtf(dr * dr + di * di);
        }
      } else {
#pragma omp simd reduction(+:acc)
        for (int64_t k = 0; k < d; k++) acc += fabsf(q[k] - (b0 * x0[k] + b1 * x1[k]));
      }
    } else if (cplx) {
      for (int64_t k = 0; k < d; k++) {
        float er, ej;
        mmkgc_mix(x, b, M, w, k, &er);
        mmkgc_mix(x, b, M, w, d + k, &ej);
        const float dr = q[k] - er, di = q[d + k] - ej;
        acc += sqrtf(dr * dr + di * di);
      }
    } else {
      for (int64_t k = 0; k < d; k++) {
        float e;
        mmkgc_mix(x, b, M, w, k, &e);
        acc += fabsf(q[k] - e);
      }
    }
    out[p] = acc;
  }
}

/* Backward of mmkgc_gather_mix_l1 for upstream gradient g [P]: with s = g[p] * d out[p] / d diff (diff = q - e),
 *   gQ[qi[p]] += s,   gbeta[p, m] = -<s, X[ei[p], m]>,   gX[ei[p], m] -= beta[p, m] s.
 * gQ / gX may be NULL (not needed); they are accumulated serially (rows repeat across p), gbeta is written.
 * s is scratch of 2 w floats. */
void mmkgc_gather_mix_l1_grad(const float* Q, const int64_t* qi, const float* X, const float* beta,
                              const int64_t* ei, const float* g, int64_t P, int64_t M, int64_t d, int cplx,
                              float* gQ, float* gX, float* gbeta, float* s) {
  const int64_t w = cplx ? 2 * d : d;
  float* e = s + w;
  for (int64_t p = 0; p < P; p++) {
    const float* q = Q + qi[p] * w;
    const float* x = X + ei[p] * M * w;
    const float* b = beta + p * M;
    const float gp = g[p];
    {
      const float b0 = b[0];
#pragma omp simd
      for (int64_t k = 0; k < w; k++) e[k] = q[k] - b0 * x[k];
    }
    for (int64_t m = 1; m < M; m++) {
      const float bm = b[m];
      const float* xm = x + m * w;
#pragma omp simd
      for (int64_t k = 0; k < w; k++) e[k] -= bm * xm[k];
    }
    /* e now holds diff = q - sum_m b_m x_m */
    if (cplx) {
#pragma omp simd
      for (int64_t k = 0; k < d; k++) {
        const float dr = e[k], di = e[d + k];
        const float mod = sqrtf(dr * dr + di * di);
        const float scale = mod > 0.0f ? gp / mod : 0.0f;  /* zero subgradient at the origin */
        s[k] = scale * dr;
        s[d + k] = scale * di;
      }
    } else {
#pragma omp simd
      for (int64_t k = 0; k < d; k++) {
        const float diff = e[k];
        s[k] = diff > 0.0f ? gp : (diff < 0.0f ? -gp : 0.0f);
      }
    }
    if (gQ) {
      float* gq = gQ + qi[p] * w;
#pragma omp simd
      for (int64_t k = 0; k < w; k++) gq[k] += s[k];
    }
    for (int64_t m = 0; m < M; m++) {
      const float* xm = x + m * w;
      float dot = 0.0f;
#pragma omp simd reduction(+:dot)
      for (int64_t k = 0; k < w; k++) dot += s[k] * xm[k];
      gbeta[p * M + m] = -dot;
      if (gX) {
        float* gx = gX + (ei[p] * M + m) * w;
        const float bm = b[m];
#pragma omp simd
        for (int64_t k = 0; k < w; k++) gx[k] -= bm * s[k];
      }
    }
  }
}
/* AFME's low-rank relation gate over distinct (entity, relation) pairs (nn/fusion.py, _GatedPairsKernel).
 * Row i = p * M + m is modality m of pair p: entity ent[p] (rows of x [U, M, D]), relation rel[p] (rows of the
 * context table c [R, D]).  Forward:  a_i = x_i ⊙ c_r;  z_i = W a_i (BLAS, outside);  γ_i = σ(z_i + b);
 * x̃_i = γ_i ⊙ x_i;  t_i = wᵀ tanh(x̃_i);  n_i = ‖x̃_i‖₂.  The element-wise parts run here, one pass per row in cache;
 * σ and tanh use the vectorisable exp below (relative error a few float ulps). */
/* gcc on AVX-512 machines prefers 256-bit vectors by default; these element-wise loops run ~20% faster with 512 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#pragma GCC push_options
#pragma GCC target("prefer-vector-width=512")
#endif
static inline float mmkgc_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = rintf(x * 1.44269504088896341f);
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  union { int32_t i; float f; } scale;
  scale.i = ((int32_t)n + 127) << 23;
  return p * scale.f;
}

/* expm1(y) for y <= 0: Taylor series for |y| < 0.35 (no cancellation), exp(y) - 1 beyond */
static inline float mmkgc_expm1_neg(float y) {
  float q = 1.0f + y * (1.0f / 9.0f);
  q = 1.0f + y * (1.0f / 8.0f) * q;
  q = 1.0f + y * (1.0f / 7.0f) * q;
  q = 1.0f + y * (1.0f / 6.0f) * q;
  q = 1.0f + y * (1.0f / 5.0f) * q;
  q = 1.0f + y * (1.0f / 4.0f) * q;
  q = 1.0f + y * (1.0f / 3.0f) * q;
  q = 1.0f + y * 0.5f * q;
  const float small = y * q;
  const float large = mmkgc_exp(y) - 1.0f;
  return y > -0.35f ? small : large;
}

static inline float mmkgc_sigmoid(float z) { return 1.0f / (1.0f + mmkgc_exp(-z)); }

static inline float mmkgc_tanh(float x) {
  const float e = mmkgc_expm1_neg(-2.0f * fabsf(x));  /* tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)) */
  return copysignf(-e / (2.0f + e), x);
}

/* a[i] = x[ent[p], m] ⊙ c[rel[p]] for the n pairs of a chunk (rows i = p M + m). */
void mmkgc_gate_context(const float* x, const int64_t* ent, const int64_t* rel, const float* c, int64_t n,
                        int64_t M, int64_t D, float* a, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t i = 0; i < n * M; i++) {
    const int64_t p = i / M, m = i % M;
    const float* xr = x + (ent[p] * M + m) * D;
    const float* cr = c + rel[p] * D;
    float* ar = a + i * D;
#pragma omp simd
    for (int64_t k = 0; k < D; k++) ar[k] = xr[k] * cr[k];
  }
}

/* Forward element-wise part: from z (= W a, without the bias) to x̃ [n M, D], t [n M] and n_i [n M]
 * (t = norm = NULL: x̃ only). */
void mmkgc_gate_forward(const float* x, const int64_t* ent, const float* z, const float* bias, const float* w,
                        int64_t n, int64_t M, int64_t D, float* xt, float* t, float* norm, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t i = 0; i < n * M; i++) {
    const int64_t p = i / M, m = i % M;
    const float* xr = x + (ent[p] * M + m) * D;
    const float* zr = z + i * D;
    float* out = xt + i * D;
    if (!t) {  /* x̃ only (the backward's recomputation) */
#pragma omp simd
      for (int64_t k = 0; k < D; k++) out[k] = mmkgc_sigmoid(zr[k] + bias[k]) * xr[k];
      continue;
    }
    float dot = 0.0f, sq = 0.0f;
#pragma omp simd reduction(+:dot, sq)
    for (int64_t k = 0; k < D; k++) {
      const float v = mmkgc_sigmoid(zr[k] + bias[k]) * xr[k];
      out[k] = v;
      dot += w[k] * mmkgc_tanh(v);
      sq += v * v;
    }
    t[i] = dot;
    norm[i] = sqrtf(sq);
  }
}

/* Backward, first element-wise part (serial: g_w and g_bias are accumulated).  Inputs: z (recomputed W a, no
 * bias), the saved x̃, t, n_i, upstream g_xt [n M, D] and g_logits [n M].  With
 * l2 the logit is t n_i, else t.  Writes g_z = g ⊙ x ⊙ γ (1 - γ), g_xe = g ⊙ γ (the gradient of x through
 * x̃ = γ ⊙ x) and a = x ⊙ c, where g = ∂L/∂x̃ = g_xt + g_t w ⊙ (1 - tanh² x̃) + [l2] g_l t x̃ / n_i. */
void mmkgc_gate_backward1(const float* x, const int64_t* ent, const int64_t* rel, const float* c, const float* z,
                          const float* bias, const float* w, const float* xt, const float* tv, const float* nv,
                          const float* g_xt, const float* g_logits, int64_t n, int64_t M, int64_t D, int l2,
                          float* g_z, float* g_xe, float* a, float* g_w, float* g_bias) {
  for (int64_t i = 0; i < n * M; i++) {
    const int64_t p = i / M, m = i % M;
    const float* xr = x + (ent[p] * M + m) * D;
    const float* cr = c + rel[p] * D;
    const float* zr = z + i * D;
    const float* xs = xt + i * D;
    const float* gx = g_xt + i * D;
    const float gl = g_logits[i];
    const float ni = nv[i];
    const float g_t = l2 ? gl * ni : gl;
    const float scale = (l2 && ni > 0.0f) ? gl * tv[i] / ni : 0.0f;
    float* gzr = g_z + i * D;
    float* gxr = g_xe + i * D;
    float* ar = a + i * D;
#pragma omp simd
    for (int64_t k = 0; k < D; k++) {
      const float th = mmkgc_tanh(xs[k]);
      g_w[k] += g_t * th;
      const float g = gx[k] + g_t * w[k] * (1.0f - th * th) + scale * xs[k];
      const float gamma = mmkgc_sigmoid(zr[k] + bias[k]);
      gxr[k] = g * gamma;
      const float gz = g * xr[k] * gamma * (1.0f - gamma);
      gzr[k] = gz;
      g_bias[k] += gz;
      ar[k] = xr[k] * cr[k];
    }
  }
}

/* Backward, second part (serial accumulation): with g_a = ∂L/∂a (BLAS, outside),
 * g_x[ent[p], m] += g_xe + g_a ⊙ c,   g_c[rel[p]] += g_a ⊙ x. */
void mmkgc_gate_backward2(const float* x, const int64_t* ent, const int64_t* rel, const float* c, const float* g_a,
                          const float* g_xe, int64_t n, int64_t M, int64_t D, float* g_x, float* g_c) {
  for (int64_t i = 0; i < n * M; i++) {
    const int64_t p = i / M, m = i % M;
    const float* xr = x + (ent[p] * M + m) * D;
    const float* cr = c + rel[p] * D;
    const float* ga = g_a + i * D;
    const float* ge = g_xe + i * D;
    float* gxr = g_x + (ent[p] * M + m) * D;
    float* gcr = g_c + rel[p] * D;
#pragma omp simd
    for (int64_t k = 0; k < D; k++) {
      gxr[k] += ge[k] + ga[k] * cr[k];
      gcr[k] += ga[k] * xr[k];
    }
  }
}

/* Per-pair mixture helpers of AFME's pair vectors (rows i = p M + m of x̃ [n M, D], one weight per row):
 * mix: e[p] = sum_m beta[i] x̃[i];  dot: out[i] = <x̃[i], g[p]>;  scale: out[i] = beta[i] g[p]. */
void mmkgc_pair_mix(const float* x, const float* beta, int64_t n, int64_t M, int64_t D, float* e) {
  for (int64_t p = 0; p < n; p++) {
    float* er = e + p * D;
    const float b0 = beta[p * M];
    const float* x0 = x + p * M * D;
#pragma omp simd
    for (int64_t k = 0; k < D; k++) er[k] = b0 * x0[k];
    for (int64_t m = 1; m < M; m++) {
      const float bm = beta[p * M + m];
      const float* xm = x + (p * M + m) * D;
#pragma omp simd
      for (int64_t k = 0; k < D; k++) er[k] += bm * xm[k];
    }
  }
}

void mmkgc_pair_dot(const float* x, const float* g, int64_t n, int64_t M, int64_t D, float* out) {
  for (int64_t i = 0; i < n * M; i++) {
    const float* xr = x + i * D;
    const float* gr = g + (i / M) * D;
    float acc = 0.0f;
#pragma omp simd reduction(+:acc)
    for (int64_t k = 0; k < D; k++) acc += xr[k] * gr[k];
    out[i] = acc;
  }
}

void mmkgc_pair_scale(const float* beta, const float* g, int64_t n, int64_t M, int64_t D, float* out) {
  for (int64_t i = 0; i < n * M; i++) {
    const float* gr = g + (i / M) * D;
    float* o = out + i * D;
    const float b = beta[i];
#pragma omp simd
    for (int64_t k = 0; k < D; k++) o[k] = b * gr[k];
  }
}

/* Fused all-entity table in the transposed layout of the all-entity kernels (evaluation of relation-conditioned
 * fusion): out_t[d, n] = sum_m beta[n, m] x[n, m, d] for x [N, M, D], beta [N, M], out_t [D, N].  Blocks of 64
 * entities: their M rows stay in L1 while d advances, and each write is 64 contiguous floats. */
void mmkgc_mix_transposed(const float* x, const float* beta, int64_t N, int64_t M, int64_t D, float* out_t,
                          int nthreads) {
  const int64_t NB = 64;
  const int64_t nblocks = (N + NB - 1) / NB;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t blk = 0; blk < nblocks; blk++) {
    const int64_t n0 = blk * NB, n1 = mmkgc_min(N, n0 + NB);
    for (int64_t d = 0; d < D; d++) {
      float* o = out_t + d * N;
      for (int64_t n = n0; n < n1; n++) {
        const float* xr = x + n * M * D + d;
        const float* b = beta + n * M;
        float acc = 0.0f;
        for (int64_t m = 0; m < M; m++) acc += b[m] * xr[m * D];
        o[n] = acc;
      }
    }
  }
}
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#pragma GCC pop_options
#endif
"""

# Flag sets tried in order; the first that compiles wins.
_COMPILE_FLAGS = (
    ["-O3", "-march=native", "-fno-math-errno", "-fopenmp"],
    ["-O3", "-fno-math-errno", "-fopenmp"],
    ["-O3", "-fno-math-errno"],
)

_kernel_lock = threading.Lock()
_kernel_state: dict = {"loaded": False, "lib": None, "warned": False, "build_seconds": None, "path": None}


def _cache_dir() -> Path:
    """mmkgc cache root (:func:`mmkgc.fileio.cache_home`); kernels go to ``<root>/kernels``."""
    return cache_home()


def _cpu_signature() -> str:
    """Identifies the CPU features ``-march=native`` depends on, so a shared cache never serves a library
    built for another processor."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features", "model name")):
                    text += line
    except OSError:
        pass
    return text


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _warn_once(message: str) -> None:
    if not _kernel_state["warned"]:
        _kernel_state["warned"] = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _build_kernels() -> ctypes.CDLL | None:
    import time

    compiler = _compiler()
    if compiler is None:
        _warn_once("mmkgc: no C compiler found; TransE-L1/RotatE all-entity scoring uses the slower "
                   "eager PyTorch path")
        return None
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    errors = []
    for flags in _COMPILE_FLAGS:
        key = hashlib.sha256(
            "\0".join([_KERNEL_SOURCE, compiler, version, " ".join(flags), _cpu_signature()]).encode()
        ).hexdigest()[:20]
        directory = _cache_dir() / "kernels" / key
        library = directory / "mmkgc_scorer_kernels.so"
        start = time.perf_counter()
        if not library.exists():
            try:
                directory.mkdir(parents=True, exist_ok=True)
                source = directory / "mmkgc_scorer_kernels.c"
                fd, tmp_src = tempfile.mkstemp(suffix=".c", dir=directory)
                with os.fdopen(fd, "w") as handle:
                    handle.write(_KERNEL_SOURCE)
                os.replace(tmp_src, source)
                fd, tmp_lib = tempfile.mkstemp(suffix=".so", dir=directory)
                os.close(fd)
                result = subprocess.run(
                    [compiler, *flags, "-shared", "-fPIC", str(source), "-o", tmp_lib, "-lm"],
                    capture_output=True, text=True, timeout=300,
                )
                if result.returncode != 0:
                    os.unlink(tmp_lib)
                    errors.append(f"{' '.join(flags)}: {result.stderr.strip()[-500:]}")
                    continue
                os.replace(tmp_lib, library)
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{' '.join(flags)}: {exc}")
                continue
        try:
            lib = ctypes.CDLL(str(library))
        except OSError as exc:
            errors.append(f"{library}: {exc}")
            continue
        lib.mmkgc_l1_dist.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                      ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
        lib.mmkgc_l1_dist.restype = None
        lib.mmkgc_complex_l1_dist.argtypes = [ctypes.c_void_p] * 4 + [
            ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
        lib.mmkgc_complex_l1_dist.restype = None
        lib.mmkgc_gather_l1.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_int,
                                                                 ctypes.c_void_p, ctypes.c_int]
        lib.mmkgc_gather_l1.restype = None
        lib.mmkgc_gather_l1_grad.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_int,
                                                                      ctypes.c_void_p, ctypes.c_int]
        lib.mmkgc_gather_l1_grad.restype = None
        lib.mmkgc_gather_mix_l1.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [
            ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        lib.mmkgc_gather_mix_l1.restype = None
        lib.mmkgc_gather_mix_l1_grad.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 3 + [
            ctypes.c_int] + [ctypes.c_void_p] * 4
        lib.mmkgc_gather_mix_l1_grad.restype = None
        lib.mmkgc_gate_context.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_void_p, ctypes.c_int]
        lib.mmkgc_gate_context.restype = None
        lib.mmkgc_gate_forward.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 3 + [
            ctypes.c_int]
        lib.mmkgc_gate_forward.restype = None
        lib.mmkgc_gate_backward1.argtypes = [ctypes.c_void_p] * 12 + [ctypes.c_int64] * 3 + [ctypes.c_int] + [
            ctypes.c_void_p] * 5
        lib.mmkgc_gate_backward1.restype = None
        lib.mmkgc_gate_backward2.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 2
        lib.mmkgc_gate_backward2.restype = None
        lib.mmkgc_mix_transposed.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 3 + [ctypes.c_void_p, ctypes.c_int]
        lib.mmkgc_mix_transposed.restype = None
        for name in ("mmkgc_pair_mix", "mmkgc_pair_dot", "mmkgc_pair_scale"):
            getattr(lib, name).argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 3 + [ctypes.c_void_p]
            getattr(lib, name).restype = None
        _kernel_state["build_seconds"] = time.perf_counter() - start
        _kernel_state["path"] = str(library)
        return lib
    _warn_once("mmkgc: could not compile the scorer kernels; TransE-L1/RotatE all-entity scoring uses the "
               "slower eager PyTorch path. Compiler output:\n" + "\n".join(errors))
    return None


def _kernels() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; ``None`` if disabled or unavailable."""
    if os.environ.get("MMKGC_NO_COMPILE", "") not in ("", "0"):
        return None
    if not _kernel_state["loaded"]:
        with _kernel_lock:
            if not _kernel_state["loaded"]:
                _kernel_state["lib"] = _build_kernels()
                _kernel_state["loaded"] = True
    return _kernel_state["lib"]


def scorer_kernel_available() -> bool:
    """Whether the compiled CPU kernels are enabled and loadable (builds them on first call)."""
    return _kernels() is not None


def _kernel_applicable(*tensors: torch.Tensor) -> bool:
    if any(x.device.type != "cpu" or x.dtype != torch.float32 for x in tensors):
        return False
    if torch.is_grad_enabled() and any(x.requires_grad for x in tensors):
        return False
    return True


class _TransposeCache:
    """Remembers the last transposed copy ``x.T.contiguous()`` of a candidate table.

    The evaluator scores many query batches against the same entity matrix; transposing it (25 MB on DB15K)
    costs about 15 % of a batch.  The entry is valid while the same tensor object is alive and unmodified
    (``x._version`` unchanged); the cache holds only a weak reference to the source.  Inference-mode tensors
    have no version counter, so they are never cached (transposed on every call).
    """

    def __init__(self) -> None:
        self._ref = None
        self._key = None
        self._value: torch.Tensor | None = None

    def get(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_inference():
            return x.t().contiguous()
        key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()), x._version)
        if self._ref is not None and self._ref() is x and self._key == key and self._value is not None:
            return self._value
        value = x.detach().t().contiguous()
        self._ref, self._key, self._value = weakref.ref(x), key, value
        return value


class _ComplexModulus(torch.autograd.Function):
    """``|re + i im|`` element-wise (``torch.hypot``) with the zero subgradient at the origin, like OpenKE's
    ``stack(...).norm(dim=0)`` but about 30x faster on CPU; the backward is made of differentiable torch ops, so
    double backward (gradient penalties) works."""

    @staticmethod
    def forward(ctx, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        modulus = torch.hypot(re, im)
        ctx.save_for_backward(re, im, modulus)
        return modulus

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        re, im, modulus = ctx.saved_tensors
        # Where the modulus is 0, re and im are 0 too, so any finite scale gives the zero subgradient.
        scale = grad / torch.where(modulus > 0, modulus, 1.0)
        return scale * re, scale * im


def _by_entity(entity_index: torch.Tensor) -> torch.Tensor:
    """The occurrences ``[P]`` ordered by the row they read (stable, so the order is deterministic): the gather kernels
    then read -- and their backward writes -- the same or neighbouring entity rows one after the other instead of
    jumping through a table much larger than the cache (measured 2x on the DB15K batches of NativE and AFME)."""
    return torch.argsort(entity_index, stable=True)


class _GatheredL1(torch.autograd.Function):
    """``out[p] = sum_k |Q[qi[p]] - E[ei[p]]|_k`` with the compiled gather kernels (CPU, float32); first-order
    gradients only (double backward raises)."""

    @staticmethod
    def forward(ctx, queries, query_index, entities, entity_index, complex_layout: bool):
        lib = _kernels()
        q = queries.detach().contiguous()
        e = entities.detach().contiguous()
        order = _by_entity(entity_index)
        qi = query_index.index_select(0, order)
        ei = entity_index.index_select(0, order)
        width = q.shape[1]
        d = width // 2 if complex_layout else width
        out = torch.empty(qi.shape[0], dtype=torch.float32)
        lib.mmkgc_gather_l1(q.data_ptr(), qi.data_ptr(), e.data_ptr(), ei.data_ptr(), qi.shape[0], d,
                            int(complex_layout), out.data_ptr(), torch.get_num_threads())
        ctx.save_for_backward(q, qi, e, ei, order)
        ctx.complex_layout = complex_layout
        return torch.empty_like(out).index_copy_(0, order, out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, qi, e, ei, order = ctx.saved_tensors
        width = q.shape[1]
        d = width // 2 if ctx.complex_layout else width
        g = grad.to(torch.float32).index_select(0, order)
        diff_grad = torch.empty(qi.shape[0], width, dtype=torch.float32)
        _kernels().mmkgc_gather_l1_grad(q.data_ptr(), qi.data_ptr(), e.data_ptr(), ei.data_ptr(), g.data_ptr(),
                                         qi.shape[0], d, int(ctx.complex_layout), diff_grad.data_ptr(),
                                         torch.get_num_threads())
        grad_q = grad_e = None
        if ctx.needs_input_grad[0]:
            grad_q = torch.zeros_like(q).index_add_(0, qi, diff_grad)
        if ctx.needs_input_grad[2]:
            grad_e = torch.zeros_like(e).index_add_(0, ei, diff_grad, alpha=-1.0)
        return grad_q, None, grad_e, None, None


def gathered_l1_distance(queries: torch.Tensor, query_index: torch.Tensor, entities: torch.Tensor,
                         entity_index: torch.Tensor, complex_layout: bool) -> torch.Tensor:
    """``sum_k |queries[query_index[p]] - entities[entity_index[p]]|_k`` for every ``p`` -> ``[P]``.

    The training hot path of TransE-L1 and RotatE: ``K`` negatives of a positive share its query vector, so
    the query table has ``2B`` rows (tail and head queries) and the entity table one row per distinct entity;
    nothing of shape ``[P, D]`` is materialised in the forward pass.  Uses the compiled CPU kernels (float32,
    first-order gradients) when available, otherwise gathers and calls the eager expression.

    :param queries: float ``[M, D]``; ``entities``: float ``[U, D]``; indices: int64 ``[P]``.
    :param complex_layout: rows are ``[re | im]`` complex vectors (moduli summed) instead of real vectors.
    """
    kernel = (_kernels() is not None and queries.device.type == "cpu" and entities.device.type == "cpu"
              and queries.dtype == torch.float32 and entities.dtype == torch.float32)
    if kernel:
        return _GatheredL1.apply(queries, query_index, entities, entity_index, complex_layout)
    q = queries.index_select(0, query_index)
    e = entities.index_select(0, entity_index)
    if complex_layout:
        return complex_l1_distance(q, e)
    return (q - e).abs().sum(-1)


class _GatheredMixtureL1(torch.autograd.Function):
    """``out[p] = sum_k |Q[qi[p]] - sum_m beta[p, m] X[ei[p], m]|_k`` with the compiled kernels (CPU, float32);
    first-order gradients to ``Q``, ``X`` and ``beta`` (double backward raises)."""

    @staticmethod
    def forward(ctx, queries, query_index, mixtures, weights, entity_index, complex_layout: bool):
        q = queries.detach().contiguous()
        x = mixtures.detach().contiguous()
        order = _by_entity(entity_index)
        beta = weights.detach().index_select(0, order)
        qi = query_index.index_select(0, order)
        ei = entity_index.index_select(0, order)
        width = q.shape[1]
        d = width // 2 if complex_layout else width
        out = torch.empty(qi.shape[0], dtype=torch.float32)
        _kernels().mmkgc_gather_mix_l1(q.data_ptr(), qi.data_ptr(), x.data_ptr(), beta.data_ptr(), ei.data_ptr(),
                                       qi.shape[0], x.shape[1], d, int(complex_layout), out.data_ptr(),
                                       torch.get_num_threads())
        ctx.save_for_backward(q, qi, x, beta, ei, order)
        ctx.complex_layout = complex_layout
        return torch.empty_like(out).index_copy_(0, order, out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, qi, x, beta, ei, order = ctx.saved_tensors
        width = q.shape[1]
        d = width // 2 if ctx.complex_layout else width
        g = grad.to(torch.float32).index_select(0, order)
        grad_q = torch.zeros_like(q) if ctx.needs_input_grad[0] else None
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[2] else None
        grad_beta = torch.empty_like(beta)
        scratch = torch.empty(2 * width, dtype=torch.float32)
        _kernels().mmkgc_gather_mix_l1_grad(
            q.data_ptr(), qi.data_ptr(), x.data_ptr(), beta.data_ptr(), ei.data_ptr(), g.data_ptr(), qi.shape[0],
            x.shape[1], d, int(ctx.complex_layout), 0 if grad_q is None else grad_q.data_ptr(),
            0 if grad_x is None else grad_x.data_ptr(), grad_beta.data_ptr(), scratch.data_ptr())
        grad_beta = torch.empty_like(grad_beta).index_copy_(0, order, grad_beta) if ctx.needs_input_grad[3] else None
        return grad_q, None, grad_x, grad_beta, None, None


def gathered_mixture_l1_distance(queries: torch.Tensor, query_index: torch.Tensor, mixtures: torch.Tensor,
                                 weights: torch.Tensor, entity_index: torch.Tensor,
                                 complex_layout: bool) -> torch.Tensor:
    """``sum_k |queries[query_index[p]] - sum_m weights[p, m] mixtures[entity_index[p], m]|_k`` -> ``[P]``.

    :func:`gathered_l1_distance` for entity vectors that are per-occurrence mixtures of ``M`` component vectors
    (the relation-conditioned fusion of NativE / AFME, ``e = sum_m beta_m x_m``): only the components of each
    distinct entity (``[U, M, D]``) and the weights of each occurrence (``[P, M]``) are stored, never the ``[P, D]``
    fused vectors.  Compiled CPU kernels (float32, first-order gradients to all three float inputs) when available;
    otherwise (GPU, float64, ``MMKGC_NO_COMPILE=1``, no compiler) the same value from gathered PyTorch ops.

    :param queries: float ``[Mq, D]``; ``mixtures``: float ``[U, M, D]``; ``weights``: float ``[P, M]``;
        indices: int64 ``[P]``.
    :param complex_layout: rows are ``[re | im]`` complex vectors (moduli summed) instead of real vectors.
    :raises ValueError: inconsistent shapes.
    """
    if mixtures.ndim != 3 or weights.ndim != 2 or weights.shape != (entity_index.shape[0], mixtures.shape[1]):
        raise ValueError(f"gathered_mixture_l1_distance: mixtures [U, M, D] and weights [P, M] expected, got "
                         f"{tuple(mixtures.shape)}, {tuple(weights.shape)} for {entity_index.shape[0]} indices")
    kernel = (_kernels() is not None
              and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (queries, mixtures, weights)))
    if kernel:
        return _GatheredMixtureL1.apply(queries, query_index, mixtures, weights, entity_index, complex_layout)
    q = queries.index_select(0, query_index)
    x = mixtures.index_select(0, entity_index)
    e = x[:, 0] * weights[:, :1]
    for m in range(1, x.shape[1]):
        e = e.addcmul(x[:, m], weights[:, m:m + 1])
    if complex_layout:
        return complex_l1_distance(q, e)
    return (q - e).abs().sum(-1)


def mixture_table_transposed(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``out_t[d, n] = sum_m weights[n, m] x[n, m, d]``: the fused vectors of ``N`` entities, written directly in the
    transposed ``[D, N]`` layout that the all-entity kernels read (``out_t.t()`` is the ``[N, D]`` table, and
    :class:`_TransposeCache` then finds it already transposed: no copy).

    Compiled CPU kernel (float32, no autograd) when available, else ``(x * weights[..., None]).sum(1).t()`` made
    contiguous.

    :param x: float ``[N, M, D]`` components; ``weights``: float ``[N, M]``.
    :returns: contiguous ``[D, N]``.
    :raises ValueError: inconsistent shapes.
    """
    if x.ndim != 3 or weights.shape != x.shape[:2]:
        raise ValueError(f"mixture_table_transposed: x [N, M, D] and weights [N, M] expected, got {tuple(x.shape)} "
                         f"and {tuple(weights.shape)}")
    lib = _kernels() if _kernel_applicable(x, weights) else None
    if lib is None:
        return (x * weights.unsqueeze(-1)).sum(1).t().contiguous()
    xc, wc = x.detach().contiguous(), weights.detach().contiguous()
    n, m, d = xc.shape
    out = torch.empty(d, n, dtype=torch.float32)
    lib.mmkgc_mix_transposed(xc.data_ptr(), wc.data_ptr(), n, m, d, out.data_ptr(), torch.get_num_threads())
    return out


def _sum_to_shape(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reduce a broadcast gradient ``x`` back to ``shape``."""
    if x.shape == shape:
        return x
    lead = x.ndim - len(shape)
    x = x.sum(dim=tuple(range(lead))) if lead > 0 else x
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(dim=dims, keepdim=True) if dims else x


class _ComplexL1Distance(torch.autograd.Function):
    """``sum_k |q_k - e_k|`` over complex coordinates in ``[re | im]`` layout, broadcasting ``q`` and ``e``.

    One subtraction and one ``hypot`` forward; the backward writes the gradient of the difference in the
    ``[re | im]`` layout directly (no split/concatenate of the halves) and recomputes the difference from the
    saved inputs with differentiable ops when a double backward is requested (``create_graph=True``, e.g. gradient
    penalties), so that stays exact; a plain backward reuses the forward's difference and moduli.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        diff = (q - e).unflatten(-1, (2, -1))
        modulus = torch.hypot(diff[..., 0, :], diff[..., 1, :])
        ctx.save_for_backward(q, e, diff, modulus)
        return modulus.sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, e, diff, modulus = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: rebuild the graph from the inputs
            diff = (q - e).unflatten(-1, (2, -1))
            modulus = torch.hypot(diff[..., 0, :], diff[..., 1, :])
        # Zero subgradient at the origin: there the difference is 0, so any finite scale gives 0.
        scale = grad.unsqueeze(-1) / torch.where(modulus > 0, modulus, 1.0)
        g = (diff * scale.unsqueeze(-2)).flatten(-2)
        return _sum_to_shape(g, q.shape), _sum_to_shape(-g, e.shape)


def complex_l1_distance(q: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``sum_k |q_k - e_k|`` for complex vectors in ``[re | im]`` layout: ``q [..., 2d], e [..., 2d] -> [...]``
    (broadcast), with the zero subgradient where ``q_k = e_k`` (as OpenKE's RotatE).

    :raises ValueError: if the last dimensions differ or are odd.
    """
    if q.shape[-1] != e.shape[-1] or q.shape[-1] % 2:
        raise ValueError(f"complex_l1_distance needs equal, even last dimensions, got {tuple(q.shape)} and "
                         f"{tuple(e.shape)}")
    return _ComplexL1Distance.apply(q, e)


def complex_modulus(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """Element-wise modulus ``sqrt(re^2 + im^2)`` of equally shaped tensors (broadcast first), differentiable
    with gradient 0 where the modulus is 0."""
    re, im = torch.broadcast_tensors(re, im)
    if torch.is_grad_enabled() and (re.requires_grad or im.requires_grad):
        return _ComplexModulus.apply(re, im)
    return torch.hypot(re, im)


def _eager_l1(q: torch.Tensor, x: torch.Tensor, bias: float, complex_layout: bool) -> torch.Tensor:
    """Chunked broadcast of ``bias - sum_k |q_k - x_k|``; temporaries bounded by :data:`EAGER_CHUNK_ELEMENTS`
    (CPU) or :data:`EAGER_CHUNK_ELEMENTS_ACCELERATOR` elements."""
    batch, width = q.shape
    budget = EAGER_CHUNK_ELEMENTS if q.device.type == "cpu" else EAGER_CHUNK_ELEMENTS_ACCELERATOR
    chunk = max(1, budget // max(1, batch * width))
    if complex_layout:
        q_re, q_im = q.chunk(2, dim=-1)
    parts = []
    for start in range(0, x.shape[0], chunk):
        xc = x[start:start + chunk]
        if complex_layout:
            x_re, x_im = xc.chunk(2, dim=-1)
            dist = complex_modulus(q_re[:, None, :] - x_re[None], q_im[:, None, :] - x_im[None]).sum(-1)
        else:
            dist = (q[:, None, :] - xc[None]).abs().sum(-1)
        parts.append(bias - dist)
    if not parts:
        return q.new_empty(batch, 0)
    return torch.cat(parts, dim=1)


def pairwise_l1_distance(q: torch.Tensor, x: torch.Tensor, bias: float = 0.0,
                         cache: _TransposeCache | None = None) -> torch.Tensor:
    """``out[b, n] = bias - sum_k |q[b, k] - x[n, k]|`` for all pairs.

    :param q: queries, float ``[B, D]``.
    :param x: candidates, float ``[N, D]`` (same dtype and device).
    :param bias: added to every score (a margin), float.
    :param cache: optional transposed-candidate cache (see module docstring).
    :returns: ``[B, N]`` in ``q.dtype``.  Uses the compiled CPU kernel when applicable, else chunked eager.
    """
    lib = _kernels() if _kernel_applicable(q, x) else None
    if lib is None:
        return _eager_l1(q, x, bias, complex_layout=False)
    q_t = q.detach().t().contiguous()
    x_t = cache.get(x) if cache is not None else x.detach().t().contiguous()
    out = torch.empty(q.shape[0], x.shape[0], dtype=torch.float32)
    lib.mmkgc_l1_dist(q_t.data_ptr(), x_t.data_ptr(), q.shape[0], x.shape[0], q.shape[1], float(bias),
                      out.data_ptr(), torch.get_num_threads())
    return out


def pairwise_complex_l1_distance(q: torch.Tensor, x: torch.Tensor, bias: float = 0.0,
                                 cache: _TransposeCache | None = None) -> torch.Tensor:
    """``out[b, n] = bias - sum_k |q_b,k - x_n,k|`` with complex vectors in ``[re | im]`` layout.

    :param q: queries, float ``[B, 2d]`` (real parts then imaginary parts).
    :param x: candidates, float ``[N, 2d]``.
    :param bias: added to every score (RotatE's margin gamma).
    :returns: ``[B, N]``; the modulus of each complex difference is summed over the ``d`` coordinates.
    """
    lib = _kernels() if _kernel_applicable(q, x) else None
    if lib is None:
        return _eager_l1(q, x, bias, complex_layout=True)
    d = q.shape[1] // 2
    q_t = q.detach().t().contiguous()
    x_t = cache.get(x) if cache is not None else x.detach().t().contiguous()
    out = torch.empty(q.shape[0], x.shape[0], dtype=torch.float32)
    lib.mmkgc_complex_l1_dist(q_t[:d].data_ptr(), q_t[d:].data_ptr(), x_t[:d].data_ptr(), x_t[d:].data_ptr(),
                              q.shape[0], x.shape[0], d, float(bias), out.data_ptr(), torch.get_num_threads())
    return out


# ====================================================================================== scorers
class Scorer(nn.Module, abc.ABC):
    """Base class of interaction functions over embeddings; higher scores mean more plausible triples.

    :param dim: the rank hyper-parameter ``d`` (for complex models, the number of complex coordinates).
    :raises ConfigError: if ``dim`` is not a positive integer.

    A new scorer needs only its score function: subclass, implement :meth:`_score_hrt` (``h [..., De],
    r [..., Dr], t [..., De] -> [...]``, broadcasting), and set :attr:`entity_dim` / :attr:`relation_dim` in
    ``__init__`` if they differ from ``dim``.  The base class derives 1-N scoring (:meth:`score_t`,
    :meth:`score_h`) by broadcasting :meth:`_score_hrt` over chunks of candidates (temporaries bounded by
    :data:`EAGER_CHUNK_ELEMENTS`), input validation and the registry entry: every public subclass defined in
    ``mmkgc`` is in :data:`scorer_resolver` under its lower-cased class name; one defined elsewhere is added with
    ``scorer_resolver.register(cls)``.  Overriding :meth:`_score_t` / :meth:`_score_h` (one matrix product, a kernel)
    and the query factorisation (:meth:`tail_query`, :meth:`head_query`, :meth:`match`) is optional, for speed.
    """

    #: Registry name.
    name: ClassVar[str] = "scorer"
    #: Whether the scorer scores all heads natively (otherwise the model uses reciprocal relations).
    supports_head_mode: ClassVar[bool] = True

    def __init__(self, dim: int):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ConfigError(f"scorer {self.name!r}: dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.entity_dim = dim
        self.relation_dim = dim

    # ---------------------------------------------------------------- initialisation
    def init_entity_(self, weight: torch.Tensor) -> torch.Tensor:
        """Initialise an entity table ``[N, entity_dim]`` in place (default: Xavier uniform, as OpenKE)."""
        self._check_width(weight, self.entity_dim, "entity table")
        with torch.no_grad():
            return nn.init.xavier_uniform_(weight)

    def init_relation_(self, weight: torch.Tensor) -> torch.Tensor:
        """Initialise a relation table ``[R, relation_dim]`` in place (default: Xavier uniform, as OpenKE)."""
        self._check_width(weight, self.relation_dim, "relation table")
        with torch.no_grad():
            return nn.init.xavier_uniform_(weight)

    # ---------------------------------------------------------------- scoring
    def forward(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`score_hrt`."""
        return self.score_hrt(h, r, t)

    def score_hrt(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Scores of individual triples: ``h [..., De], r [..., Dr], t [..., De] -> [...]`` (broadcast)."""
        self._check_hrt(h, r, t)
        return self._score_hrt(h, r, t)

    def score_t(self, h: torch.Tensor, r: torch.Tensor, t_all: torch.Tensor) -> torch.Tensor:
        """Every candidate as tail: ``h [B, De], r [B, Dr], t_all [N, De] -> [B, N]``;
        ``out[b, n] == score_hrt(h[b], r[b], t_all[n])``."""
        self._check_all(h, r, t_all, "h", "t_all")
        return self._score_t(h, r, t_all)

    def score_h(self, h_all: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Every candidate as head: ``h_all [N, De], r [B, Dr], t [B, De] -> [B, N]``;
        ``out[b, n] == score_hrt(h_all[n], r[b], t[b])``."""
        self._check_all(t, r, h_all, "t", "h_all")
        return self._score_h(h_all, r, t)

    # ---------------------------------------------------------------- query factorisation
    def tail_query(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The query vector of ``(h, r, ?)``: ``h [..., De], r [..., Dr] -> q [..., De]`` such that
        ``score_hrt(h, r, t) == match(q, t)``.  Every built-in scorer factorises this way; training uses it to
        score ``K`` corrupted tails of a positive without repeating the ``(h, r)`` part ``K`` times."""
        raise TypeError(f"{type(self).__name__} does not factorise into query and match")

    def head_query(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The query vector of ``(?, r, t)``: ``q [..., De]`` with ``score_hrt(h, r, t) == match(q, h)``."""
        raise TypeError(f"{type(self).__name__} does not factorise into query and match")

    def match(self, q: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Score of query vectors against candidate entity vectors: ``q [..., De], e [..., De] -> [...]``."""
        raise TypeError(f"{type(self).__name__} does not factorise into query and match")

    def match_gathered(self, queries: torch.Tensor, query_index: torch.Tensor, entities: torch.Tensor,
                       entity_index: torch.Tensor) -> torch.Tensor:
        """``match(queries[query_index], entities[entity_index]) -> [P]`` for query and entity tables
        ``[M, De]``, ``[U, De]`` and int64 indices ``[P]``; distance scorers override it with a fused kernel."""
        return self.match(queries.index_select(0, query_index), entities.index_select(0, entity_index))

    def match_gathered_mixture(self, queries: torch.Tensor, query_index: torch.Tensor, mixtures: torch.Tensor,
                               weights: torch.Tensor, entity_index: torch.Tensor) -> torch.Tensor:
        """``match(queries[query_index], e) -> [P]`` with ``e[p] = sum_m weights[p, m] mixtures[entity_index[p], m]``
        (``mixtures [U, M, De]``, ``weights [P, M]``): scoring the negatives of a relation-conditioned fusion.
        Distance scorers override it with a kernel that never materialises ``e``."""
        x = mixtures.index_select(0, entity_index)
        e = (weights.unsqueeze(-1).to(x.dtype) * x).sum(-2)
        return self.match(queries.index_select(0, query_index), e)

    @property
    def factorises(self) -> bool:
        """Whether :meth:`tail_query` / :meth:`head_query` / :meth:`match` are implemented."""
        return type(self).match is not Scorer.match

    def score_all(self, known: torch.Tensor, r: torch.Tensor, candidates: torch.Tensor, side: Side) -> torch.Tensor:
        """``score_t(known, r, candidates)`` if ``side == "tail"``, ``score_h(candidates, r, known)`` if
        ``side == "head"``; ``[B, N]``.

        :raises ValueError: for another ``side``.
        """
        if side == "tail":
            return self.score_t(known, r, candidates)
        if side == "head":
            return self.score_h(candidates, r, known)
        raise ValueError(f"side must be 'head' or 'tail', got {side!r}")

    # ---------------------------------------------------------------- validation
    def _check_width(self, x: torch.Tensor, width: int, what: str) -> None:
        if x.ndim == 0 or x.shape[-1] != width:
            raise ValueError(
                f"{type(self).__name__}: {what} must have last dimension {width}, got shape {tuple(x.shape)}"
            )

    def _check_hrt(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> None:
        self._check_width(h, self.entity_dim, "head embeddings h")
        self._check_width(r, self.relation_dim, "relation embeddings r")
        self._check_width(t, self.entity_dim, "tail embeddings t")

    def _check_all(self, e: torch.Tensor, r: torch.Tensor, cand: torch.Tensor, e_name: str, c_name: str) -> None:
        self._check_width(e, self.entity_dim, f"{e_name}")
        self._check_width(r, self.relation_dim, "relation embeddings r")
        self._check_width(cand, self.entity_dim, f"candidate embeddings {c_name}")
        if e.ndim != 2 or r.ndim != 2 or cand.ndim != 2 or e.shape[0] != r.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: expected {e_name} [B, {self.entity_dim}], r [B, {self.relation_dim}], "
                f"{c_name} [N, {self.entity_dim}]; got {tuple(e.shape)}, {tuple(r.shape)}, {tuple(cand.shape)}"
            )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, entity_dim={self.entity_dim}, relation_dim={self.relation_dim}"

    # ---------------------------------------------------------------- what subclasses implement
    @abc.abstractmethod
    def _score_hrt(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Validated :meth:`score_hrt`: ``h [..., De], r [..., Dr], t [..., De] -> [...]`` with broadcasting."""

    def _score_t(self, h: torch.Tensor, r: torch.Tensor, t_all: torch.Tensor) -> torch.Tensor:
        """Validated :meth:`score_t` (default: :meth:`_score_hrt` broadcast over chunks of candidates)."""
        return self._broadcast_all(lambda c: self._score_hrt(h[:, None], r[:, None], c[None]), h.shape[0], t_all)

    def _score_h(self, h_all: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Validated :meth:`score_h` (default: :meth:`_score_hrt` broadcast over chunks of candidates)."""
        return self._broadcast_all(lambda c: self._score_hrt(c[None], r[:, None], t[:, None]), t.shape[0], h_all)

    @staticmethod
    def _broadcast_all(score, batch: int, candidates: torch.Tensor) -> torch.Tensor:
        """``score(chunk) [B, n]`` over chunks of ``candidates [N, De]`` concatenated to ``[B, N]``; a chunk's
        ``[B, n, De]`` temporaries hold at most :data:`EAGER_CHUNK_ELEMENTS` (CPU) or
        :data:`EAGER_CHUNK_ELEMENTS_ACCELERATOR` elements."""
        accel = candidates.device.type != "cpu"
        budget = EAGER_CHUNK_ELEMENTS_ACCELERATOR if accel else EAGER_CHUNK_ELEMENTS
        chunk = max(1, budget // max(1, batch * candidates.shape[-1]))
        parts = [score(candidates[s:s + chunk]) for s in range(0, candidates.shape[0], chunk)]
        if not parts:
            return candidates.new_empty(batch, 0)
        return torch.cat(parts, dim=1)


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary halves of a ``[..., 2d]`` tensor in ``[re | im]`` layout."""
    return x.chunk(2, dim=-1)


class TransE(Scorer):
    """TransE (Bordes et al., 2013, "Translating Embeddings for Modeling Multi-relational Data").

    ``f(h, r, t) = margin - ||h + r - t||_p`` (``margin`` omitted -> ``-||h + r - t||_p``), entity and
    relation vectors in ``R^d``.  With ``normalize=True`` h, r and t are first scaled to unit L2 norm (OpenKE
    ``norm_flag``).  All-entity scoring: ``p = 1`` uses the compiled L1 kernel on CPU; ``p = 2`` uses the
    expansion ``||q||^2 + ||x||^2 - 2 <q, x>`` (one GEMM, clamped at 0 before the square root; the float32
    cancellation error is ``~1e-7 ||q||^2`` absolute).

    :param dim: ``d``.
    :param p: norm order, 1 or 2.
    :param margin: optional constant added to every score (OpenKE ``margin_flag``), float.
    :param normalize: L2-normalise h, r, t before scoring.
    :raises ConfigError: for ``p`` not in {1, 2}.
    """

    name = "transe"

    def __init__(self, dim: int, p: int = 1, margin: float | None = None, normalize: bool = False):
        super().__init__(dim)
        if p not in (1, 2):
            raise ConfigError(f"scorer 'transe': p must be 1 or 2, got {p!r}")
        self.p = int(p)
        self.margin = None if margin is None else float(margin)
        self.normalize = bool(normalize)
        self._cache = _TransposeCache()

    def _bias(self) -> float:
        return 0.0 if self.margin is None else self.margin

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, p=2.0, dim=-1) if self.normalize else x

    def _score_hrt(self, h, r, t):
        dist = torch.linalg.vector_norm(self._norm(h) + self._norm(r) - self._norm(t), ord=self.p, dim=-1)
        return self._bias() - dist

    def _all(self, q: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        cand = self._norm(cand)
        if self.p == 1:
            return pairwise_l1_distance(q, cand, self._bias(), cache=None if self.normalize else self._cache)
        sq = (q * q).sum(-1, keepdim=True) + (cand * cand).sum(-1)[None, :] - 2.0 * (q @ cand.t())
        return self._bias() - sq.clamp_min(0.0).sqrt()

    def tail_query(self, h, r):
        return self._norm(h) + self._norm(r)

    def head_query(self, r, t):
        # |h + r - t| = |h - (t - r)| coordinate-wise.
        return self._norm(t) - self._norm(r)

    def match(self, q, e):
        return self._bias() - torch.linalg.vector_norm(q - self._norm(e), ord=self.p, dim=-1)

    def match_gathered(self, queries, query_index, entities, entity_index):
        if self.p == 1:
            return self._bias() - gathered_l1_distance(queries, query_index, self._norm(entities), entity_index,
                                                       False)
        return super().match_gathered(queries, query_index, entities, entity_index)

    def match_gathered_mixture(self, queries, query_index, mixtures, weights, entity_index):
        if self.p == 1 and not self.normalize:
            return self._bias() - gathered_mixture_l1_distance(queries, query_index, mixtures, weights,
                                                               entity_index, False)
        return super().match_gathered_mixture(queries, query_index, mixtures, weights, entity_index)

    def _score_t(self, h, r, t_all):
        return self._all(self.tail_query(h, r), t_all)

    def _score_h(self, h_all, r, t):
        return self._all(self.head_query(r, t), h_all)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}, margin={self.margin}, normalize={self.normalize}"


class _DotProductScorer(Scorer):
    """Scorers whose score is a real dot product of a query vector with the candidate: ``match(q, e) = <q, e>``
    (DistMult; ComplEx, where ``Re(sum q conj(e))`` is the dot product of the ``[re | im]`` vectors), so
    all-entity scoring is one matrix product per side."""

    def match(self, q, e):
        return (q * e).sum(-1)

    def _score_t(self, h, r, t_all):
        return self.tail_query(h, r) @ t_all.t()

    def _score_h(self, h_all, r, t):
        return self.head_query(r, t) @ h_all.t()


class DistMult(_DotProductScorer):
    """DistMult (Yang et al., 2015, "Embedding Entities and Relations for Learning and Inference in KBs").

    ``f(h, r, t) = sum_k h_k r_k t_k`` with h, r, t in ``R^d``; all-entity scoring is one matrix product.
    """

    name = "distmult"

    def _score_hrt(self, h, r, t):
        return (h * r * t).sum(-1)

    def tail_query(self, h, r):
        return h * r

    def head_query(self, r, t):
        return r * t



class ComplEx(_DotProductScorer):
    """ComplEx (Trouillon et al., 2016, "Complex Embeddings for Simple Link Prediction").

    ``f(h, r, t) = Re(sum_k h_k r_k conj(t_k))`` with h, r, t in ``C^d``, stored as ``[re | im]`` float
    vectors of width ``2d`` (``entity_dim = relation_dim = 2 * dim``).  All-entity scoring is one matrix
    product per side.
    """

    name = "complex"

    def __init__(self, dim: int):
        super().__init__(dim)
        self.entity_dim = 2 * dim
        self.relation_dim = 2 * dim

    def _score_hrt(self, h, r, t):
        h_re, h_im = _halves(h)
        r_re, r_im = _halves(r)
        t_re, t_im = _halves(t)
        return (h_re * r_re * t_re + h_im * r_re * t_im + h_re * r_im * t_im - h_im * r_im * t_re).sum(-1)

    def tail_query(self, h, r):
        h_re, h_im = _halves(h)
        r_re, r_im = _halves(r)
        return torch.cat([h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re], dim=-1)  # h * r

    def head_query(self, r, t):
        r_re, r_im = _halves(r)
        t_re, t_im = _halves(t)
        return torch.cat([r_re * t_re + r_im * t_im, r_re * t_im - r_im * t_re], dim=-1)  # r * conj(t), conjugated



class RotatE(Scorer):
    """RotatE (Sun et al., 2019, "RotatE: Knowledge Graph Embedding by Relational Rotation in Complex
    Space"), with OpenKE's parameterisation as used by AdaMF-MAT and NativE.

    Entities are ``d`` complex numbers stored as ``[re | im]`` (``entity_dim = 2d``); a relation is ``d``
    phases stored unscaled (``relation_dim = d``) and mapped to angles ``theta = r / (((gamma + eps) / d) / pi)``.
    ``f(h, r, t) = gamma - sum_k |h_k e^{i theta_k} - t_k|``; head mode computes
    ``|conj(e^{i theta_k}) t_k - h_k|``, which has the same value.  Initialisation (OpenKE): entities uniform in
    ``+-(gamma + eps) / (2d)``, relations uniform in ``+-(gamma + eps) / d``.

    :param dim: ``d`` (complex coordinates).
    :param margin: ``gamma`` (OpenKE default 6.0; AdaMF-MAT/NativE DB15K use 12.0).
    :param epsilon: ``eps`` (OpenKE 2.0).
    """

    name = "rotate"

    def __init__(self, dim: int, margin: float = 6.0, epsilon: float = 2.0):
        super().__init__(dim)
        self.margin = float(margin)
        self.epsilon = float(epsilon)
        self.entity_dim = 2 * dim
        self.relation_dim = dim
        self.entity_range = (self.margin + self.epsilon) / self.entity_dim
        self.relation_range = (self.margin + self.epsilon) / self.relation_dim
        self._cache = _TransposeCache()

    def init_entity_(self, weight: torch.Tensor) -> torch.Tensor:
        """Uniform in ``+-(gamma + eps) / (2d)`` (OpenKE ``ent_embedding_range``)."""
        self._check_width(weight, self.entity_dim, "entity table")
        with torch.no_grad():
            return nn.init.uniform_(weight, -self.entity_range, self.entity_range)

    def init_relation_(self, weight: torch.Tensor) -> torch.Tensor:
        """Uniform in ``+-(gamma + eps) / d`` (OpenKE ``rel_embedding_range``)."""
        self._check_width(weight, self.relation_dim, "relation table")
        with torch.no_grad():
            return nn.init.uniform_(weight, -self.relation_range, self.relation_range)

    def rotation(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos theta, sin theta)`` of relation embeddings ``r [..., d]``, each ``[..., d]``."""
        phase = r / (self.relation_range / math.pi)
        return torch.cos(phase), torch.sin(phase)

    def _rotate(self, h: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, s = self.rotation(r)
        h_re, h_im = _halves(h)
        return h_re * c - h_im * s, h_re * s + h_im * c

    def _score_hrt(self, h, r, t):
        rot_re, rot_im = self._rotate(h, r)
        t_re, t_im = _halves(t)
        # Zero subgradient where the difference vanishes, as OpenKE's stack + norm over the re/im axis.
        return self.margin - complex_modulus(rot_re - t_re, rot_im - t_im).sum(-1)

    def tail_query(self, h, r):
        return torch.cat(self._rotate(h, r), -1)  # h * e^{i theta}

    def head_query(self, r, t):
        c, s = self.rotation(r)
        t_re, t_im = _halves(t)
        return torch.cat([t_re * c + t_im * s, t_im * c - t_re * s], -1)  # conj(e^{i theta}) * t

    def match(self, q, e):
        return self.margin - complex_l1_distance(q, e)

    def match_gathered(self, queries, query_index, entities, entity_index):
        return self.margin - gathered_l1_distance(queries, query_index, entities, entity_index, True)

    def match_gathered_mixture(self, queries, query_index, mixtures, weights, entity_index):
        return self.margin - gathered_mixture_l1_distance(queries, query_index, mixtures, weights, entity_index, True)

    def _score_t(self, h, r, t_all):
        return pairwise_complex_l1_distance(self.tail_query(h, r), t_all, self.margin, self._cache)

    def _score_h(self, h_all, r, t):
        return pairwise_complex_l1_distance(self.head_query(r, t), h_all, self.margin, self._cache)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", margin={self.margin}, epsilon={self.epsilon}"


class TuckER(Scorer):
    """TuckER (Balažević et al., EMNLP 2019) with batch norms and dropouts in the order of the IMVIA / MoMoK / IMF
    decoders (methods.md section 4.2)::

        x = Dropout_in(BN_0(h))                       # [..., De]
        W_r = Dropout_hid1(reshape(r W, [De, De]))     # core W [Dr, De, De] contracted with r
        q = Dropout_hid2(BN_1(x W_r))                  # tail query [..., De]
        score(h, r, t) = q . t                         # a logit; IMVIA applies a sigmoid for probabilities

    :param dim: entity width ``De``.
    :param relation_dim: relation width ``Dr`` (default ``dim``); the core has ``Dr * De * De`` parameters
        (16.8M for 256/256).
    :param input_dropout, hidden_dropout1, hidden_dropout2: the published 0.3 / 0.4 / 0.5.
    :param batch_norm: use ``BN_0`` and ``BN_1`` (published: yes).

    Batch norm and dropout make the score depend on the batch in training mode, so scores are pointwise
    functions of ``(h, r, t)`` only in eval mode.  The scorer is meant for 1-N training with reciprocal relations
    (head queries are ``(t, r + R, ?)``): :meth:`score_h` (all heads natively) is exact in eval mode through the
    factorisation ``score = a_0 (.) h . W_r (a_1 (.) t) + c_0 . W_r (a_1 (.) t) + c_1 . t`` of the two eval-mode
    batch norms ``BN(z) = a (.) z + c``, and raises in training mode.

    Shapes: ``score_hrt``: ``h [..., De], r [..., Dr], t [..., De] -> [...]``; ``score_t``:
    ``h [B, De], r [B, Dr], t_all [N, De] -> [B, N]``.
    """

    name = "tucker"
    supports_head_mode = False

    def __init__(self, dim: int, relation_dim: int | None = None, input_dropout: float = 0.3,
                 hidden_dropout1: float = 0.4, hidden_dropout2: float = 0.5, batch_norm: bool = True):
        super().__init__(dim)
        rdim = dim if relation_dim is None else relation_dim
        if isinstance(rdim, bool) or not isinstance(rdim, int) or rdim <= 0:
            raise ConfigError(f"scorer 'tucker': relation_dim must be a positive integer, got {relation_dim!r}")
        for key, p in (("input_dropout", input_dropout), ("hidden_dropout1", hidden_dropout1),
                       ("hidden_dropout2", hidden_dropout2)):
            if not 0.0 <= float(p) < 1.0:
                raise ConfigError(f"scorer 'tucker': {key} must be in [0, 1), got {p!r}")
        self.relation_dim = rdim
        self.core = nn.Parameter(torch.empty(rdim, dim, dim))
        nn.init.xavier_uniform_(self.core)  # as the published decoders (fan computed on [Dr, De, De])
        self.input_dropout = nn.Dropout(input_dropout)
        self.hidden_dropout1 = nn.Dropout(hidden_dropout1)
        self.hidden_dropout2 = nn.Dropout(hidden_dropout2)
        self.bn0 = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()
        self.bn1 = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()

    def init_entity_(self, weight: torch.Tensor) -> torch.Tensor:
        """Xavier normal, as the published TuckER/IMVIA tables."""
        self._check_width(weight, self.entity_dim, "entity table")
        with torch.no_grad():
            return nn.init.xavier_normal_(weight)

    def init_relation_(self, weight: torch.Tensor) -> torch.Tensor:
        """Xavier normal, as the published TuckER/IMVIA tables."""
        self._check_width(weight, self.relation_dim, "relation table")
        with torch.no_grad():
            return nn.init.xavier_normal_(weight)

    def _rows(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Apply a batch norm to ``x [..., D]``: over the flattened leading dimensions in training mode, as the
        per-coordinate affine map of its running statistics in eval mode (any dtype)."""
        if isinstance(module, nn.Identity):
            return x
        if not self.training:
            a, c = self._affine(module, self.dim, x)
            return x * a + c
        return module(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def tail_query_vectors(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The query ``q [..., De]`` of ``(h, r, ?)`` (``h`` and ``r`` broadcast); ``score = q . t``."""
        shape = torch.broadcast_shapes(h.shape[:-1], r.shape[:-1])
        h = h.expand(*shape, h.shape[-1])
        r = r.expand(*shape, r.shape[-1])
        x = self.input_dropout(self._rows(self.bn0, h))
        w = (r @ self.core.reshape(self.relation_dim, -1).to(r.dtype)).reshape(*shape, self.dim, self.dim)
        w = self.hidden_dropout1(w)
        z = (x.unsqueeze(-2) @ w).squeeze(-2)
        return self.hidden_dropout2(self._rows(self.bn1, z))

    def _score_hrt(self, h, r, t):
        return (self.tail_query_vectors(h, r) * t).sum(-1)

    def _score_t(self, h, r, t_all):
        return self.tail_query_vectors(h, r) @ t_all.T

    @staticmethod
    def _affine(bn: nn.Module, dim: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, c)`` with ``bn(z) == a * z + c`` for an eval-mode batch norm (or the identity)."""
        if isinstance(bn, nn.Identity):
            return torch.ones(dim, dtype=like.dtype, device=like.device), torch.zeros(dim, dtype=like.dtype,
                                                                                        device=like.device)
        inv = torch.rsqrt(bn.running_var.to(like.dtype) + bn.eps)
        a = bn.weight.to(like.dtype) * inv
        return a, bn.bias.to(like.dtype) - bn.running_mean.to(like.dtype) * a

    def _score_h(self, h_all, r, t):
        if self.training:
            raise ValueError("TuckER scores all candidate heads only in eval mode (batch norm uses batch statistics "
                             "in training); train with reciprocal relations (model.reciprocal: true)")
        a0, c0 = self._affine(self.bn0, self.dim, t)
        a1, c1 = self._affine(self.bn1, self.dim, t)
        w = (r @ self.core.reshape(self.relation_dim, -1).to(t.dtype)).reshape(-1, self.dim, self.dim)
        v = (w @ (a1 * t).unsqueeze(-1)).squeeze(-1)  # W_r (a_1 * t): [B, De]
        bias = v @ c0 + t @ c1  # [B]
        return (v * a0) @ h_all.T + bias.unsqueeze(-1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", batch_norm={not isinstance(self.bn0, nn.Identity)}"


#: Every public :class:`Scorer` subclass of mmkgc by lower-cased class name (``transe``, ``distmult``, ``complex``,
#: ``rotate``, ``tucker``); default RotatE.  Add an outside scorer with ``scorer_resolver.register(cls)``.
scorer_resolver: ClassResolver[Scorer] = ClassResolver.from_subclasses(
    Scorer, default=RotatE, location="mmkgc.nn.scorers.scorer_resolver"
)


def build_scorer(name: str, dim: int, **options) -> Scorer:
    """Create a registered scorer.

    :param name: a name in :data:`scorer_resolver` (case-insensitive): ``transe``, ``distmult``, ``complex``,
        ``rotate``, ``tucker``, or a registered one.
    :param dim: the rank ``d``.
    :param options: constructor options of that scorer (e.g. ``margin``, ``epsilon`` for RotatE).
    :raises UnknownNameError: for an unknown scorer name.
    :raises ConfigError: for an option the scorer does not accept or an invalid value.
    """
    key = str(name).lower()
    try:
        cls = scorer_resolver.lookup(key)
    except (KeyError, ValueError):
        known = ", ".join(sorted(scorer_resolver.lookup_dict))
        raise UnknownNameError(f"unknown scorer {name!r}; known scorers: {known}") from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "dim")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"scorer {key!r}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}"
        )
    return cls(dim, **options)
