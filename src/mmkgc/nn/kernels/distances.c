/* mmkgc scorer kernels (TransE-L1 and RotatE, methods in mmkgc/nn/scorers.py):
 *   out[b, n] = bias - sum_k |q[k, b] - x[k, n]|  (real, TransE-L1)
 *   out[b, n] = bias - sum_k |(qre + i qim)[k, b] - (xre + i xim)[k, n]|  (RotatE)
 * Inputs are transposed ([D, B] and [D, N], row-major) so that the innermost loop runs over contiguous
 * candidates and vectorises without horizontal reductions.  Work is split into (entity block, query block)
 * tasks; an entity block (EB candidates x D) stays in L2 while all query blocks pass over it.  Every (query,
 * candidate) pair is computed by the same instructions whatever block it falls in, so scores do not depend on the
 * batch size or on a query's position in the batch (the evaluator's ranks are then equal for every chunking).
 * `orow` (may be NULL) maps query q to its output row: scores written straight into rows of a larger matrix.
 * Also the gathered distances of training batches (mmkgc_gather_*), with their backward passes. */
#include "common.h"

#define QB 4
#define VW 16
#define EB 256

#if defined(__AVX512F__)
/* |(xr + i xi) - (a + i b)| for 16 candidates: sqrt(s) = s * rsqrt(s) with one Newton step (relative error ~1e-7,
 * about 25 % faster than vsqrtps).  s = 0 (y = inf) and s = inf (y = 0) make s * y, hence the root, NaN, and no
 * other s does (a NaN s stays NaN): with `exact` those lanes are replaced by s (0 and inf passed through exactly).
 * Without it the root is NaN there, and the tile is redone with `exact` when its sums hold a NaN (below). */
static inline __attribute__((always_inline)) __m512 mmkgc_cabs16(__m512 vr, __m512 vi, float a, float b,
                                                                 const int exact) {
  const __m512 half = _mm512_set1_ps(0.5f), three_half = _mm512_set1_ps(1.5f);
  const __m512 dr = _mm512_sub_ps(vr, _mm512_set1_ps(a));
  const __m512 di = _mm512_sub_ps(vi, _mm512_set1_ps(b));
  const __m512 sq = _mm512_fmadd_ps(dr, dr, _mm512_mul_ps(di, di));
  const __m512 y = _mm512_rsqrt14_ps(sq);
  const __m512 sy = _mm512_mul_ps(sq, y);
  __m512 root = _mm512_mul_ps(sy, _mm512_fnmadd_ps(_mm512_mul_ps(sy, y), half, three_half));
  /* an empty asm: the compiler may not fuse this product with the caller's sum into one FMA (other rounding) */
  __asm__("" : "+v"(root));
  return exact ? _mm512_mask_mov_ps(root, _mm512_cmp_ps_mask(root, root, _CMP_UNORD_Q), sq) : root;
}

/* One tile of complex distances: nq (<= QB) queries x the candidates of `lanes` (<= 16), summed over D
 * coordinates into acc.  Full and partial tiles run the same instructions (masked loads for a partial candidate
 * block), so a (query, candidate) score does not depend on the batch it is computed in.
 *
 * The sums are first taken without the exact-case blend (2 of 12 vector operations per coordinate).  A sum is
 * NaN exactly when one of its roots was NaN (the roots are >= 0 or, for a denormal s, -inf; a sum of at most
 * 2^31 roots below 2^64 does not overflow), i.e. when a coordinate difference was 0, infinite or NaN; only then
 * is the tile summed again with the blend.  So every sum is the exact-case sum bit for bit. */
static inline __attribute__((always_inline)) void mmkgc_ctile(
    const float* xr, const float* xi, const float* a, const float* b, int64_t ldx, int64_t ldq, int64_t D,
    const int64_t nq, __mmask16 lanes, float acc[QB][VW]) {
  __m512 v[QB];
  for (int j = 0; j < QB; j++) v[j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < D; k++) {
    const __m512 vr = _mm512_maskz_loadu_ps(lanes, xr + k * ldx), vi = _mm512_maskz_loadu_ps(lanes, xi + k * ldx);
#pragma GCC unroll 4
    for (int64_t j = 0; j < nq; j++)
      v[j] = _mm512_add_ps(v[j], mmkgc_cabs16(vr, vi, a[k * ldq + j], b[k * ldq + j], 0));
  }
  __mmask16 nan = 0;
  for (int64_t j = 0; j < nq; j++) nan |= _mm512_mask_cmp_ps_mask(lanes, v[j], v[j], _CMP_UNORD_Q);
  if (__builtin_expect(nan != 0, 0)) {
    for (int j = 0; j < QB; j++) v[j] = _mm512_setzero_ps();
    for (int64_t k = 0; k < D; k++) {
      const __m512 vr = _mm512_maskz_loadu_ps(lanes, xr + k * ldx), vi = _mm512_maskz_loadu_ps(lanes, xi + k * ldx);
      for (int64_t j = 0; j < nq; j++)
        v[j] = _mm512_add_ps(v[j], mmkgc_cabs16(vr, vi, a[k * ldq + j], b[k * ldq + j], 1));
    }
  }
  for (int64_t j = 0; j < nq; j++) _mm512_storeu_ps(acc[j], v[j]);
}
#endif

/* out row of query q: orow[q] when a row map is given (scores written straight into rows of a larger matrix) */
static inline int64_t mmkgc_orow(const int64_t* orow, int64_t q) { return orow ? orow[q] : q; }

static inline __attribute__((always_inline)) void mmkgc_task(
    const float* qre, const float* qim, const float* xre, const float* xim, int64_t B, int64_t N,
    int64_t D, float bias, float* out, const int64_t* orow, int64_t eb, int64_t qb, const int cplx) {
  const int64_t q0 = qb * QB, nq = mmkgc_min(QB, B - q0);
  const int64_t e_end = mmkgc_min((eb + 1) * EB, N);
  for (int64_t e0 = eb * EB; e0 < e_end; e0 += VW) {
    const int64_t ne = mmkgc_min(VW, N - e0);
    float acc[QB][VW];
    memset(acc, 0, sizeof(acc));
#if defined(__AVX512F__)
    if (cplx) {
      const __mmask16 lanes = (__mmask16)(ne == VW ? 0xFFFFu : ((1u << ne) - 1u));
      if (nq == QB)
        mmkgc_ctile(xre + e0, xim + e0, qre + q0, qim + q0, N, B, D, QB, lanes, acc);
      else  /* a partial tile: the same instructions for fewer queries */
        mmkgc_ctile(xre + e0, xim + e0, qre + q0, qim + q0, N, B, D, nq, lanes, acc);
    } else
#endif
    if (ne == VW && nq == QB) {
      for (int64_t k = 0; k < D; k++) {
        const float* xr = xre + k * N + e0;
        const float* a = qre + k * B + q0;
        if (cplx) {
          const float* xi = xim + k * N + e0;
          const float* b = qim + k * B + q0;
#pragma GCC unroll 4
          for (int j = 0; j < QB; j++) {
#pragma omp simd
            for (int e = 0; e < VW; e++) {
              const float dr = xr[e] - a[j], di = xi[e] - b[j];
              acc[j][e] += sqrtf(dr * dr + di * di);
            }
          }
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
    for (int64_t j = 0; j < nq; j++) {
      float* o = out + mmkgc_orow(orow, q0 + j) * N + e0;
      for (int64_t e = 0; e < ne; e++) o[e] = bias - acc[j][e];
    }
  }
}

static inline __attribute__((always_inline)) void mmkgc_dist(
    const float* qre, const float* qim, const float* xre, const float* xim, int64_t B, int64_t N, int64_t D,
    float bias, float* out, const int64_t* orow, int nthreads, const int cplx) {
  const int64_t nqb = (B + QB - 1) / QB, neb = (N + EB - 1) / EB;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t task = 0; task < neb * nqb; task++)
    mmkgc_task(qre, qim, xre, xim, B, N, D, bias, out, orow, task / nqb, task % nqb, cplx);
}

MMKGC_EXPORT void mmkgc_l1_dist(const float* q, const float* x, int64_t B, int64_t N, int64_t D, float bias,
                   float* out, const int64_t* orow, int nthreads) {
  mmkgc_dist(q, q, x, x, B, N, D, bias, out, orow, nthreads, 0);
}

MMKGC_EXPORT void mmkgc_complex_l1_dist(const float* qre, const float* qim, const float* xre, const float* xim,
                           int64_t B, int64_t N, int64_t D, float bias, float* out, const int64_t* orow, int nthreads) {
  mmkgc_dist(qre, qim, xre, xim, B, N, D, bias, out, orow, nthreads, 1);
}

/* Gathered distances for training with K negatives per positive, without materialising [P, 2d] copies:
 *   out[p] = sum_k |Q[qi[p], k] - E[ei[p], k]|   (cplx: complex moduli over [re | im] rows of width 2d;
 *                                                else: absolute values over rows of width d)
 * and the gradient of that sum with respect to the difference, G[p, :] = g[p] * d/d(diff), written densely;
 * the caller scatters G into the two tables (index_add). */
MMKGC_EXPORT void mmkgc_gather_l1(const float* Q, const int64_t* qi, const float* E, const int64_t* ei, int64_t P,
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

MMKGC_EXPORT void mmkgc_gather_l1_grad(const float* Q, const int64_t* qi, const float* E, const int64_t* ei,
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

MMKGC_EXPORT void mmkgc_gather_mix_l1(const float* Q, const int64_t* qi, const float* X, const float* beta, const int64_t* ei,
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
MMKGC_EXPORT void mmkgc_gather_mix_l1_grad(const float* Q, const int64_t* qi, const float* X, const float* beta,
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
