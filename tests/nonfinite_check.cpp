// NaN/Inf propagation check for one op case on one device: injects NaN, +inf and -inf into every
// float input at nonfinite_positions() and compares the forward output with the naive float64
// reference (tests/op_refs.cpp): NaN where the reference is NaN, the same infinity where it is
// infinite, finite and close elsewhere (so a NaN may neither vanish nor leak into other rows).
#include <cmath>
#include <limits>
#include <sstream>

#include "core/autograd.h"
#include "tests/op_table.h"

namespace engine::test {

std::vector<std::string> nonfinite_check(const OpCase& c, DType dtype, Device device, int max_failures) {
  std::vector<std::string> failures;
  NoGradGuard ng;
  std::vector<Tensor> base = make_inputs(c, DType::F64, Device::cpu(), 5);
  std::vector<std::vector<double>> host;
  for (size_t i = 0; i < base.size(); ++i) {
    if (c.inputs[i].kind == InputSpec::Kind::Index) {
      auto v = base[i].to_vector<int64_t>();
      host.emplace_back(v.begin(), v.end());
    } else {
      host.push_back(base[i].to_vector<double>());
    }
  }
  const double tol = dtype == DType::F32 ? 2e-3 : 1e-9;
  const double vals[] = {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                         -std::numeric_limits<double>::infinity()};
  for (size_t i = 0; i < host.size(); ++i) {
    if (c.inputs[i].kind == InputSpec::Kind::Index) continue;
    for (int64_t pos : nonfinite_positions(int64_t(host[i].size()))) {
      for (double val : vals) {
        auto in = host;
        in[i][pos] = val;
        const std::vector<double> ref = naive_ref(c, in);
        std::vector<Tensor> t;
        for (size_t j = 0; j < in.size(); ++j) {
          if (c.inputs[j].kind == InputSpec::Kind::Index) {
            t.push_back(base[j].to(device));
          } else {
            t.push_back(Tensor::from_vector(in[j], c.inputs[j].shape).to(dtype).to(device));
          }
        }
        const std::vector<double> out =
            c.fn(t).contiguous().to(Device::cpu()).to(DType::F64).to_vector<double>();
        std::ostringstream where;
        where << c.op << "/" << c.variant << " input " << i << "[" << pos << "] = " << val << ": ";
        if (out.size() != ref.size()) {
          failures.push_back(where.str() + "output size " + std::to_string(out.size()) + " != reference " +
                             std::to_string(ref.size()));
          continue;
        }
        for (size_t k = 0; k < out.size(); ++k) {
          const double r = ref[k], o = out[k];
          bool ok;
          if (std::isnan(r))
            ok = std::isnan(o);
          else if (std::isinf(r))
            ok = o == r;
          else
            ok = std::isfinite(o) && std::abs(o - r) <= tol * (1.0 + std::abs(r));
          if (!ok) {
            std::ostringstream m;
            m << where.str() << "output[" << k << "] = " << o << ", reference " << r;
            failures.push_back(m.str());
            if (int(failures.size()) >= max_failures) return failures;
            break;  // one message per injection
          }
        }
      }
    }
  }
  return failures;
}

}  // namespace engine::test
