// On-disk cache of fm_eval's real-data reference (EvalReference: test-set feature Gaussian, test subset
// features, FD floor, classifier test accuracy), which costs 11,000 classifier passes to compute. An entry
// is keyed by a hash of everything it depends on: the classifier file's bytes, the MNIST files' bytes, the
// sample count n, the seed, and the classifier's features on fixed probe images (so a change of the
// kernels, precision or build that alters the features bitwise misses the cache instead of reusing stale
// statistics). Values are stored as raw doubles, so a hit reproduces the computed reference bit for bit.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "apps/common/sample_eval.h"

namespace engine::app {

// The default cache directory: $FM_EVAL_CACHE if set and non-empty, else $XDG_CACHE_HOME/engine-fm_eval,
// else $HOME/.cache/engine-fm_eval, else "" (no cache).
std::string default_eval_cache_dir();

// Hex key (16 digits) of the reference for (classifier file, MNIST directory, n, seed), including the
// probe-feature fingerprint of `model` (the classifier loaded from `classifier_path`). Throws
// std::runtime_error when the classifier file cannot be read.
std::string reference_key(const models::MnistClassifier& model, const std::string& classifier_path,
                          const std::string& data_dir, int64_t n, uint64_t seed);

// The cache file for `key` in `dir`: dir/reference-<key>.bin.
std::string reference_cache_path(const std::string& dir, const std::string& key);

// Reads a cached reference; std::nullopt when the file is missing, truncated, of another format, or holds
// another key or n (a corrupt entry is a miss, never an error).
std::optional<EvalReference> load_cached_reference(const std::string& dir, const std::string& key, int64_t n);

// Writes the reference atomically (temporary file + rename), creating `dir`. Returns false (and leaves no
// partial file) when the directory or file cannot be written; the cache is an optimisation, not an error.
bool save_cached_reference(const std::string& dir, const std::string& key, const EvalReference& ref);

}  // namespace engine::app
