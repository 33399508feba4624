// State-dict conversion and the strict, all-errors-at-once loader.
#include "nn/state_dict.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "core/autograd.h"

namespace engine::nn {

namespace {
// Through the dtype-traits table (core/dtype.h): the engine dtype's safetensors name, and back.
bool to_st_dtype(DType d, st::StDtype* out) { return st::parse_dtype(dtype_traits(d).st_name, out); }
bool from_st_dtype(st::StDtype d, DType* out) {
  for (const DTypeTraits& t : kDTypeTraits) {
    if (std::strcmp(t.st_name, st::dtype_name(d)) == 0) {
      *out = t.dtype;
      return true;
    }
  }
  return false;
}
bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
}  // namespace

st::StTensor st_from_tensor(const std::string& name, const Tensor& t) {
  ENGINE_CHECK(t.defined(), "st_from_tensor", "tensor '", name, "' is undefined");
  st::StTensor s;
  s.name = name;
  to_st_dtype(t.dtype(), &s.dtype);
  s.shape = t.shape();
  Tensor c = t.detach().to(Device::cpu()).contiguous();
  const size_t bytes = static_cast<size_t>(c.numel()) * dtype_size(c.dtype());
  s.data.resize(bytes);
  if (bytes) std::memcpy(s.data.data(), c.raw_data(), bytes);
  return s;
}

st::StFile state_dict_to_st(const std::vector<std::pair<std::string, Tensor>>& named,
                            const std::string& prefix) {
  st::StFile f;
  for (const auto& [n, t] : named) f.tensors.push_back(st_from_tensor(prefix + n, t));
  return f;
}

Tensor tensor_from_st(const st::StTensor& t, Device device) {
  DType dt;
  ENGINE_CHECK(from_st_dtype(t.dtype, &dt), "tensor_from_st", "tensor '", t.name, "' has unsupported dtype ",
               st::dtype_name(t.dtype), " (supported: F32, F64, I64, U8)");
  ENGINE_CHECK(static_cast<int64_t>(t.data.size()) == t.numel() * static_cast<int64_t>(dtype_size(dt)),
               "tensor_from_st", "tensor '", t.name, "' has ", t.data.size(), " bytes for shape ",
               shape_str(t.shape));
  return Tensor::from_bytes(t.data.data(), t.shape, dt, device);
}

LoadReport load_state_dict(std::vector<std::pair<std::string, Tensor>>& named, const st::StFile& f,
                           const LoadOptions& opt) {
  LoadReport rep;
  std::map<std::string, size_t> model_index;
  for (size_t i = 0; i < named.size(); ++i) model_index[named[i].first] = i;

  // File keys (after prefix selection) -> tensor, in file order.
  std::vector<std::pair<std::string, const st::StTensor*>> entries;
  for (const st::StTensor& t : f.tensors)
    if (starts_with(t.name, opt.prefix)) entries.emplace_back(t.name.substr(opt.prefix.size()), &t);

  for (auto& [n, _] : entries) {
    const auto r = opt.rename.find(n);
    if (r != opt.rename.end() && r->second != n) {
      n = r->second;
      ++rep.renamed;
    }
  }

  std::vector<std::string> missing, unexpected, shape_bad, dtype_bad, duplicate;
  std::map<std::string, const st::StTensor*> found;
  for (auto& [n, t] : entries) {
    auto it = model_index.find(n);
    if (it == model_index.end()) {
      unexpected.push_back(opt.prefix + n);
      continue;
    }
    if (found.count(n)) {
      duplicate.push_back(n);
      continue;
    }
    found[n] = t;
    const Tensor& p = named[it->second].second;
    if (t->shape != p.shape()) {
      shape_bad.push_back(n + ": file " + shape_str(t->shape) + " vs model " + shape_str(p.shape()));
      continue;
    }
    DType fd;
    const bool known = from_st_dtype(t->dtype, &fd);
    const bool same = known && fd == p.dtype();
    const bool convertible = known && is_floating(fd) && is_floating(p.dtype()) && opt.allow_dtype_conversion;
    if (!same && !convertible)
      dtype_bad.push_back(n + ": file " + st::dtype_name(t->dtype) + " vs model " + dtype_name(p.dtype()) +
                          (known && is_floating(fd) && is_floating(p.dtype())
                               ? " (set allow_dtype_conversion to convert)"
                               : ""));
  }
  for (auto& [n, p] : named) {
    if (found.count(n)) continue;
    if (std::find(opt.allow_missing.begin(), opt.allow_missing.end(), n) != opt.allow_missing.end()) {
      rep.kept.push_back(n);
      continue;
    }
    missing.push_back(n);
  }

  if (!missing.empty() || !unexpected.empty() || !shape_bad.empty() || !dtype_bad.empty() ||
      !duplicate.empty()) {
    std::ostringstream os;
    os << "load_state_dict: the file does not match the model (" << missing.size() << " missing, "
       << unexpected.size() << " unexpected, " << shape_bad.size() << " shape mismatches, "
       << dtype_bad.size() << " dtype mismatches" << (duplicate.empty() ? "" : ", duplicates") << ")";
    if (!opt.prefix.empty()) os << " [prefix '" << opt.prefix << "']";
    if (!opt.note.empty()) os << " " << opt.note;
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      for (const auto& s : v) os << "\n  " << what << ": " << s;
    };
    list("missing key", missing);
    list("unexpected key", unexpected);
    list("shape mismatch", shape_bad);
    list("dtype mismatch", dtype_bad);
    list("duplicate key (after renaming)", duplicate);
    for (const auto& [key, hint] : opt.missing_hints)
      if (std::find(missing.begin(), missing.end(), key) != missing.end()) os << "\n  " << hint;
    throw Error(os.str());
  }

  NoGradGuard ng;
  for (auto& [n, t] : found) {
    Tensor& p = named[model_index[n]].second;
    Tensor src = tensor_from_st(*t, Device::cpu());
    if (src.dtype() != p.dtype()) rep.converted.push_back(n);
    p.copy_(src);
    ++rep.loaded;
  }
  return rep;
}

}  // namespace engine::nn
