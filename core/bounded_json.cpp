// Bounded JSON parsing for untrusted input (see bounded_json.h).
#include "core/bounded_json.h"

#include <set>
#include <vector>

#include "core/error.h"

namespace engine {

std::string truncate_text(std::string s, size_t max_chars) {
  if (s.size() > max_chars) {
    s.resize(max_chars);
    s += "...";
  }
  return s;
}

std::string json_excerpt(const nlohmann::json& v, size_t max_chars) {
  // dump() recurses once per nesting level; values reaching here come from parse_json_bounded (depth <=
  // kMaxJsonDepth) or from our own code.
  return truncate_text(v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), max_chars);
}

nlohmann::json parse_json_bounded(std::string_view text, const std::string& what, size_t max_bytes,
                                  size_t max_depth) {
  using json = nlohmann::json;
  if (text.size() > max_bytes)
    throw Error(what + ": JSON text of " + std::to_string(text.size()) + " bytes exceeds the limit of " +
                std::to_string(max_bytes) + " bytes");
  // nlohmann's lexer stops at a NUL byte as if the text ended there; valid JSON never contains one.
  if (text.find('\0') != std::string_view::npos) throw Error(what + ": not valid JSON: contains a NUL byte");
  // One set of keys per open object; containers are opened one event at a time, so the depth check
  // fires before the (max_depth + 1)-th level exists.
  std::vector<std::set<std::string>> keys;
  size_t open = 0;
  std::string problem;
  auto cb = [&](int /*depth*/, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (++open > max_depth) {
          problem = "JSON nests deeper than " + std::to_string(max_depth) + " levels";
          throw Error(problem);
        }
        if (ev == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        --open;
        if (ev == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string() &&
            !keys.back().insert(parsed.get_ref<const std::string&>()).second) {
          problem = "duplicate key '" + truncate_text(parsed.get<std::string>(), 80) + "' in a JSON object";
          throw Error(problem);
        }
        break;
      case json::parse_event_t::value:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    throw Error(what + ": not valid JSON: " + truncate_text(e.what()));
  } catch (const Error&) {
    if (problem.empty()) throw;
    throw Error(what + ": " + problem);
  }
}

}  // namespace engine
