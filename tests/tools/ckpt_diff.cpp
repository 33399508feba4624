// ckpt_diff A.safetensors B.safetensors [TOL]: compares two safetensors files tensor by tensor (same names,
// dtypes and shapes required). TOL 0 (default): bitwise equality of the data; TOL > 0: F32/F64 tensors may
// differ by at most TOL (absolute), other dtypes must be bitwise equal. Prints one line with the largest
// difference. Exit status: 0 equal (within TOL), 1 different, 2 usage or read error. Used by
// scripts/test_mpi.sh.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "core/safetensors.h"

namespace {

template <typename T>
double max_abs_diff(const engine::st::StTensor& a, const engine::st::StTensor& b) {
  const size_t n = a.data.size() / sizeof(T);
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    T x, y;
    std::memcpy(&x, a.data.data() + i * sizeof(T), sizeof(T));
    std::memcpy(&y, b.data.data() + i * sizeof(T), sizeof(T));
    const double d = std::fabs(static_cast<double>(x) - static_cast<double>(y));
    if (!(d <= m)) m = std::isnan(d) ? INFINITY : d;
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: ckpt_diff A.safetensors B.safetensors [TOL]\n");
    return 2;
  }
  const double tol = argc == 4 ? std::strtod(argv[3], nullptr) : 0.0;
  try {
    const engine::st::StFile a = engine::st::read_file(argv[1]), b = engine::st::read_file(argv[2]);
    if (a.tensors.size() != b.tensors.size()) {
      std::printf("ckpt_diff: %zu vs %zu tensors\n", a.tensors.size(), b.tensors.size());
      return 1;
    }
    double worst = 0;
    std::string worst_name = "-";
    size_t differing = 0;
    for (const engine::st::StTensor& ta : a.tensors) {
      const engine::st::StTensor* tb = b.find(ta.name);
      if (!tb || tb->dtype != ta.dtype || tb->shape != ta.shape) {
        std::printf("ckpt_diff: tensor %s missing or of another dtype/shape in %s\n", ta.name.c_str(),
                    argv[2]);
        return 1;
      }
      if (ta.data == tb->data) continue;
      ++differing;
      double d = INFINITY;
      if (ta.dtype == engine::st::StDtype::F32) d = max_abs_diff<float>(ta, *tb);
      if (ta.dtype == engine::st::StDtype::F64) d = max_abs_diff<double>(ta, *tb);
      if (tol == 0 && d == 0) d = 1e-300;  // e.g. -0 vs +0: not bitwise equal
      if (d > worst) worst = d, worst_name = ta.name;
    }
    const bool ok = tol == 0 ? differing == 0 : worst <= tol;
    std::printf("ckpt_diff: %zu tensors, %zu not bitwise equal, max |a-b| = %g (%s)%s\n", a.tensors.size(),
                differing, worst, worst_name.c_str(),
                ok         ? ""
                : tol == 0 ? " [bitwise check]"
                           : " > tolerance");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckpt_diff: %s\n", e.what());
    return 2;
  }
}
