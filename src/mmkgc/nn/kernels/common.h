/* Shared by the mmkgc CPU kernels (distances.c, gate.c).
 *
 * The kernels are plain functions over raw float32 / int64 buffers: no Python, no libtorch headers, so one source
 * builds both through torch.utils.cpp_extension and with a bare compiler (mmkgc/nn/kernels/__init__.py), and the
 * library is called through ctypes.  Every exported symbol has C linkage (MMKGC_EXPORT). */
#ifndef MMKGC_KERNELS_COMMON_H
#define MMKGC_KERNELS_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifdef __cplusplus
#define MMKGC_EXPORT extern "C" __attribute__((visibility("default")))
#else
#define MMKGC_EXPORT __attribute__((visibility("default")))
#endif

static inline int64_t mmkgc_min(int64_t a, int64_t b) { return a < b ? a : b; }

#endif
