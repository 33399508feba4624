// The CPU conv2d bias gradients (internal to kernels/cpu/conv2d.cpp): db (K) and the per-sample bias's dt
// (N, K) from dy (N, K, P, Q), one image at a time, so that the weight gradient's image loop can add each
// image while its dy is in cache, or as a pass of their own (bias_grad).
//
// db[k] = sum of dy[n][k][.][.] over n and the pixels, in float64, rounded once. Eight partial sums per
// channel: the pixel i of each image goes to partial i % 8 (in image order), and the partials are added
// pairwise ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)). A fixed order per channel (whichever thread
// adds a channel, and however the channels are grouped): the same bits for any thread count; eight
// independent chains instead of one (a float64 add's latency per element) let the loop run at vector
// width, and kBiasGroup channels interleaved (each with its own partials, in the same order) hide the add
// latency.
// dt[n][k] = sum of dy[n][k][.][.] over the pixels, one float64 chain per (n, k) over the pixels in order,
// rounded once: the order of sum(dy, {2, 3}) (kernels/cpu/reduce.cpp sum_rows), so the same bits, from the
// same pass over dy (the G chains of a group interleaved).
#pragma once
#include <omp.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/kernel_shapes.h"

namespace kern::cpu::conv2d_detail {

// One channel's eight float64 partial sums of db.
struct BiasPartials {
  double v[8];
};

constexpr int64_t kBiasGroup = 4;

// Channels k0 .. k0 + G - 1 of one image: d = &dy[n][k0][0][0] (G rows of PQ values), p = their partials
// (continued), dtn = &dt[n][k0] (written when DT).
template <typename T, int G, bool DB, bool DT>
void bias_grad_image(int64_t PQ, const T* d, BiasPartials* p, T* dtn) {
  const int64_t PQ8 = PQ / 8 * 8;
  double a[G] = {};  // dt's chains of this image
#ifdef __AVX2__
  // float with AVX2: the partials v[0..3] and v[4..7] in two vectors of float64, the 8 pixels converted by
  // two vcvtps2pd (exact) and added lane by lane: the same adds in the same order as the loop below (which
  // GCC leaves as scalar conversions and shuffles: 4-5x slower).
  if constexpr (std::is_same_v<T, float> && DB) {
    __m256d pv[G][2];
    for (int g = 0; g < G; ++g) pv[g][0] = _mm256_loadu_pd(p[g].v), pv[g][1] = _mm256_loadu_pd(p[g].v + 4);
    for (int64_t i = 0; i < PQ8; i += 8)
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) {
        const __m256 x = _mm256_loadu_ps(d + g * PQ + i);
        pv[g][0] = _mm256_add_pd(pv[g][0], _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        pv[g][1] = _mm256_add_pd(pv[g][1], _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
        if constexpr (DT)
          for (int l = 0; l < 8; ++l) a[g] += static_cast<double>(d[g * PQ + i + l]);
      }
    for (int g = 0; g < G; ++g) _mm256_storeu_pd(p[g].v, pv[g][0]), _mm256_storeu_pd(p[g].v + 4, pv[g][1]);
  } else
#endif
    for (int64_t i = 0; i < PQ8; i += 8)
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
        for (int l = 0; l < 8; ++l) {
          if constexpr (DB) p[g].v[l] += static_cast<double>(d[g * PQ + i + l]);
          if constexpr (DT) a[g] += static_cast<double>(d[g * PQ + i + l]);
        }
  for (int g = 0; g < G; ++g)
    for (int64_t i = PQ8; i < PQ; ++i) {
      if constexpr (DB) p[g].v[i - PQ8] += static_cast<double>(d[g * PQ + i]);
      if constexpr (DT) a[g] += static_cast<double>(d[g * PQ + i]);
    }
  if constexpr (DT)
    for (int g = 0; g < G; ++g) dtn[g] = static_cast<T>(a[g]);
}

// The bias gradients requested (db and / or dt; either may be nullptr), channel range by channel range.
template <typename T>
struct BiasGrad {
  const Conv2dShape& s;
  const T* dy;
  T *db, *dt;

  bool any() const { return db || dt; }

  // Image n's pixels of channels [k0, k1) added to their partials p[0 .. k1 - k0) (and dt[n][k0 .. k1)).
  void add_image(int64_t n, int64_t k0, int64_t k1, BiasPartials* p) const {
    if (db && dt)
      add_image_impl<true, true>(n, k0, k1, p);
    else if (db)
      add_image_impl<true, false>(n, k0, k1, p);
    else if (dt)
      add_image_impl<false, true>(n, k0, k1, p);
  }

  // db[k0 .. k1) from their partials (no-op without db).
  void finish(int64_t k0, int64_t k1, const BiasPartials* p) const {
    if (!db) return;
    for (int64_t k = k0; k < k1; ++k) {
      const double* v = p[k - k0].v;
      db[k] = static_cast<T>(((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])));
    }
  }

 private:
  template <bool DB, bool DT>
  void add_image_impl(int64_t n, int64_t k0, int64_t k1, BiasPartials* p) const {
    const int64_t PQ = s.P * s.Q;
    int64_t k = k0;
    auto dtn = [&](int64_t kk) { return DT ? dt + n * s.K + kk : nullptr; };
    for (; k + kBiasGroup <= k1; k += kBiasGroup)
      bias_grad_image<T, kBiasGroup, DB, DT>(PQ, dy + (n * s.K + k) * PQ, p + (k - k0), dtn(k));
    for (; k < k1; ++k) bias_grad_image<T, 1, DB, DT>(PQ, dy + (n * s.K + k) * PQ, p + (k - k0), dtn(k));
  }
};

// db (K) and / or dt (N, K) in a pass of their own over dy (either may be nullptr): the threads split the
// channels in groups of kBiasGroup, each group's images in order.
template <typename T>
void bias_grad(const Conv2dShape& s, const T* dy, T* db, T* dt) {
  const BiasGrad<T> bg{s, dy, db, dt};
  if (!bg.any()) return;
  const int64_t groups = (s.K + kBiasGroup - 1) / kBiasGroup;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && \
                                              s.N * s.K * s.P * s.Q >= (int64_t(1) << 15))
  for (int64_t gi = 0; gi < groups; ++gi) {
    const int64_t k0 = gi * kBiasGroup, k1 = std::min(s.K, k0 + kBiasGroup);
    BiasPartials p[kBiasGroup] = {};
    for (int64_t n = 0; n < s.N; ++n) bg.add_image(n, k0, k1, p);
    bg.finish(k0, k1, p);
  }
}

}  // namespace kern::cpu::conv2d_detail
