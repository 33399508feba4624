// Parsing of untrusted JSON documents (model configs, checkpoint metadata) with fixed bounds, so that no
// input can exhaust the stack or memory: the text size is capped, nesting deeper than kMaxJsonDepth is
// rejected while parsing (before any deep DOM exists that nlohmann's recursive dump/copy could overflow
// the stack on), and duplicate object keys are rejected instead of silently keeping the last value.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace engine {

// Deepest accepted nesting of arrays/objects (the top-level container counts as 1).
inline constexpr size_t kMaxJsonDepth = 64;
// Largest accepted JSON document for configs and metadata values (the DOM costs a small multiple).
inline constexpr size_t kMaxJsonBytes = size_t{1} << 20;

// Parses `text` as one JSON value. Throws engine::Error("<what>: ...") (one line) if the text is longer
// than `max_bytes`, is not valid JSON (trailing non-whitespace included), nests deeper than `max_depth`,
// or repeats a key within one object.
nlohmann::json parse_json_bounded(std::string_view text, const std::string& what,
                                  size_t max_bytes = kMaxJsonBytes, size_t max_depth = kMaxJsonDepth);

// `v.dump()` cut to at most `max_chars` characters ("..." appended when cut), for error messages.
std::string json_excerpt(const nlohmann::json& v, size_t max_chars = 80);

// `s` cut to at most `max_chars` characters with "..." appended when cut.
std::string truncate_text(std::string s, size_t max_chars = 200);

}  // namespace engine
