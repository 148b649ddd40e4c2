/* Kernels of AFME's relation gate and the relation-conditioned fusion (mmkgc/nn/fusion/gated_pairs.py;
 * Wang et al., "AFME", Neural Networks 2025; methods.md 5.2), the transposed mixture table of evaluation, and the
 * tanh-attention logits of the fusion without a gate (mmkgc/nn/fusion/tanh_attention.py). */
#include "common.h"

/* AFME's low-rank relation gate over distinct (entity, relation) pairs (nn/fusion/gated_pairs.py, _GatedPairsKernel).
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
MMKGC_EXPORT void mmkgc_gate_context(const float* x, const int64_t* ent, const int64_t* rel, const float* c, int64_t n,
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
MMKGC_EXPORT void mmkgc_gate_forward(const float* x, const int64_t* ent, const float* z, const float* bias, const float* w,
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
MMKGC_EXPORT void mmkgc_gate_backward1(const float* x, const int64_t* ent, const int64_t* rel, const float* c, const float* z,
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
MMKGC_EXPORT void mmkgc_gate_backward2(const float* x, const int64_t* ent, const int64_t* rel, const float* c, const float* g_a,
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
 * mix: e[p] = sum_m beta[i] x̃[i];  dot: out[i] = <x̃[i], g[p]>;  scale: out[i] = beta[i] g[p].  mix and dot are
 * also the mixture and its backward of the tanh attention without a gate (nn/fusion/tanh_attention.py). */
MMKGC_EXPORT void mmkgc_pair_mix(const float* x, const float* beta, int64_t n, int64_t M, int64_t D, float* e,
                                 int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
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

MMKGC_EXPORT void mmkgc_pair_dot(const float* x, const float* g, int64_t n, int64_t M, int64_t D, float* out,
                                 int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t i = 0; i < n * M; i++) {
    const float* xr = x + i * D;
    const float* gr = g + (i / M) * D;
    float acc = 0.0f;
#pragma omp simd reduction(+:acc)
    for (int64_t k = 0; k < D; k++) acc += xr[k] * gr[k];
    out[i] = acc;
  }
}

MMKGC_EXPORT void mmkgc_pair_scale(const float* beta, const float* g, int64_t n, int64_t M, int64_t D, float* out) {
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
MMKGC_EXPORT void mmkgc_mix_transposed(const float* x, const float* beta, int64_t N, int64_t M, int64_t D, float* out_t,
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
/* The same fused table from components already in the transposed layout (evaluation of NativE-style fusion: the
 * components do not depend on the relation, so they are transposed once per scoring session):
 * out_t[d, n] = sum_m beta_t[m, n] xt[m, d, n] for xt [M, D, N], beta_t [M, N], out_t [D, N].  Every read and write
 * is contiguous along n (one streaming pass); each element is summed over m in the order and with the expression
 * of mmkgc_mix_transposed, so the two tables are equal bit for bit. */
MMKGC_EXPORT void mmkgc_mix_columns(const float* xt, const float* beta_t, int64_t N, int64_t M, int64_t D, float* out_t,
                       int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t d = 0; d < D; d++) {
    for (int64_t n0 = 0; n0 < N; n0 += 512) {  /* 512 sums in L1 while the M components are added */
      const int64_t nb = mmkgc_min(512, N - n0);
      float acc[512];
      for (int64_t n = 0; n < nb; n++) acc[n] = 0.0f;
      for (int64_t m = 0; m < M; m++) {
        const float* x = xt + (m * D + d) * N + n0;
        const float* b = beta_t + m * N + n0;
#pragma omp simd
        for (int64_t n = 0; n < nb; n++) acc[n] += b[n] * x[n];
      }
      memcpy(out_t + d * N + n0, acc, (size_t)nb * sizeof(float));
    }
  }
}

/* Backward of the tanh-attention logits t_i = wᵀ tanh(x_i) without a gate (AdaMF, NativE; nn/fusion/tanh_attention.py,
 * _TanhDot and _TanhAttention; methods.md 6.2, 7), from th = tanh(x) saved by the forward, with the attention
 * mixture's own term added in the same pass.  Row i = p M + m of th [rows, D]:
 *   g_x[i] = beta[i] g[p] + g_t[i] w ⊙ (1 - th_i²)     (beta = g = NULL: the second term only).
 * One streaming pass; ∂/∂w = thᵀ g_t is a matrix-vector product left to BLAS. */
MMKGC_EXPORT void mmkgc_tanh_dot_grad(const float* th, const float* w, const float* g_t, const float* beta,
                         const float* g, int64_t rows, int64_t M, int64_t D, float* g_x, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t i = 0; i < rows; i++) {
    const float* tr = th + i * D;
    float* gr = g_x + i * D;
    const float gt = g_t[i];
    if (beta) {
      const float b = beta[i];
      const float* gp = g + (i / M) * D;
#pragma omp simd
      for (int64_t k = 0; k < D; k++) gr[k] = b * gp[k] + gt * w[k] * (1.0f - tr[k] * tr[k]);
    } else {
#pragma omp simd
      for (int64_t k = 0; k < D; k++) gr[k] = gt * w[k] * (1.0f - tr[k] * tr[k]);
    }
  }
}
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#pragma GCC pop_options
#endif
