// The shared check of the in-place attention layouts (attention_blhd_test.cpp, attention_bhdl_test.cpp): a
// kernel pair reading and writing heads in some memory layout gives bitwise the o, lse, dq, dk, dv of
// kern::cpu::attention_forward / attention_backward on contiguous (B, H, L, D) copies.
#pragma once
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/test_util.h"

namespace engine::test {

// fwd(B, H, Lq, Lk, D, scale, q, k, v, o, lse) and bwd(..., o, lse, dout, dq, dk, dv) run the kernel on
// arrays in the layout; to_bhld(x, B, H, L, D) copies such an array (L rows of D per head) to contiguous
// (B, H, L, D). Checked on every ISA path this CPU has, 1 and 2 threads, D in {1, 7, 8, 16}, H in heads,
// (Lq, Lk) in {(13, 13), (9, 21), (1, 5)}.
template <class Fwd, class Bwd, class ToBhld>
void expect_layout_equals_contiguous_path(std::initializer_list<int64_t> heads, Fwd fwd, Bwd bwd,
                                          ToBhld to_bhld) {
  namespace kc = kern::cpu;
  IsaGuard guard;
  const int64_t B = 2;
  const int old_threads = omp_get_max_threads();
  for (kc::CpuIsa isa : supported_isas())
    for (int threads : {1, 2})
      for (int64_t D : {1, 7, 8, 16})
        for (int64_t H : heads)
          for (auto [Lq, Lk] : {std::pair<int64_t, int64_t>{13, 13}, {9, 21}, {1, 5}}) {
            SCOPED_TRACE(::testing::Message() << "isa " << int(isa) << " threads " << threads << " D " << D
                                              << " H " << H << " Lq " << Lq << " Lk " << Lk);
            kc::set_cpu_isa(isa);
            omp_set_num_threads(threads);
            const unsigned seed = unsigned(D * 100 + H * 10 + Lq);
            const std::vector<float> q = normal_vector<float>(B * H * Lq * D, seed, 0.0, 1.0);
            const std::vector<float> k = normal_vector<float>(B * H * Lk * D, seed + 1, 0.0, 1.0);
            const std::vector<float> v = normal_vector<float>(B * H * Lk * D, seed + 2, 0.0, 1.0);
            const std::vector<float> g = normal_vector<float>(B * H * Lq * D, seed + 3, 0.0, 1.0);
            const double scale = 1.0 / std::sqrt(double(D));
            // In place, in the layout.
            std::vector<float> o(q.size()), lse(B * H * Lq), dq(q.size()), dk(k.size()), dv(v.size());
            fwd(B, H, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(), lse.data());
            bwd(B, H, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(), lse.data(), g.data(),
                dq.data(), dk.data(), dv.data());
            // The contiguous (B, H, L, D) path on copies.
            const std::vector<float> qc = to_bhld(q, B, H, Lq, D), kc_ = to_bhld(k, B, H, Lk, D),
                                     vc = to_bhld(v, B, H, Lk, D), gc = to_bhld(g, B, H, Lq, D);
            std::vector<float> oc(q.size()), lsec(B * H * Lq), dqc(q.size()), dkc(k.size()), dvc(v.size());
            kc::attention_forward<float>(B * H, Lq, Lk, D, scale, qc.data(), kc_.data(), vc.data(), oc.data(),
                                         lsec.data());
            kc::attention_backward<float>(B * H, Lq, Lk, D, scale, qc.data(), kc_.data(), vc.data(),
                                          oc.data(), lsec.data(), gc.data(), dqc.data(), dkc.data(),
                                          dvc.data());
            EXPECT_TRUE(bitwise_equal(to_bhld(o, B, H, Lq, D), oc)) << "o";
            EXPECT_TRUE(bitwise_equal(lse, lsec)) << "lse";
            EXPECT_TRUE(bitwise_equal(to_bhld(dq, B, H, Lq, D), dqc)) << "dq";
            EXPECT_TRUE(bitwise_equal(to_bhld(dk, B, H, Lk, D), dkc)) << "dk";
            EXPECT_TRUE(bitwise_equal(to_bhld(dv, B, H, Lk, D), dvc)) << "dv";
          }
  omp_set_num_threads(old_threads);
}

}  // namespace engine::test
