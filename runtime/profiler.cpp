// The op-level profiler (runtime/profiler.h): a fixed hash table of per-op totals, a fixed stack of open
// scopes, a trace buffer reserved once, CUDA-event pairs from runtime/profiler_cuda.*, the table and trace
// writers, and the ENGINE_PROFILE / ENGINE_PROFILE_TRACE environment switch.
#include "runtime/profiler.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "runtime/error.h"
#include "runtime/profiler_cuda.h"

namespace engine::prof {

namespace detail {
std::atomic<bool> g_on{false};
}

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kMaxEntries = 512;  // power of two; distinct op names (the engine has well under 100)
constexpr int kMaxDepth = 64;
constexpr int kNameLen = 64;
constexpr int kArgsLen = 112;

struct Entry {
  bool used = false;
  uint64_t hash = 0;
  char name[kNameLen] = {};
  int64_t calls = 0;    // top-level calls
  int64_t host_ns = 0;  // host time of the calls not timed on a GPU
  double gpu_ms = 0;    // event time of the GPU-timed calls
  int64_t gpu_calls = 0;
  double flops = 0, bytes = 0;
  bool flops_unknown = false, bytes_unknown = false;
};
struct Open {
  int entry = -1;
  int64_t t0 = 0;
  double flops = 0, bytes = 0;  // this call's work, nested scopes included
  bool flops_unknown = false, bytes_unknown = false;
  int pair = -1;       // CUDA event pair, or -1
  int64_t trace = -1;  // index in the trace buffer, or -1
};
struct TraceEvent {
  int32_t entry = 0;
  int32_t tid = 1;  // 1 host, 2 GPU
  int64_t ts_ns = 0, dur_ns = -1;
  char args[kArgsLen] = {};
};
struct Pending {
  int entry = -1;
  int64_t host_ts = 0;
};

struct State {
  Entry entries[kMaxEntries];
  int n_entries = 0;
  Open stack[kMaxDepth];
  int depth = 0;
  Pending pending[cudaev::kPairs];
  double start_ms[cudaev::kPairs] = {}, dur_ms[cudaev::kPairs] = {};
  int n_pending = 0;
  std::vector<TraceEvent> trace;
  bool tracing = false;
  int64_t max_events = 0, dropped = 0;
  std::thread::id owner;
  Clock::time_point epoch{}, started{};
  bool epoch_set = false;
  int64_t wall_ns = 0;
  bool cuda_seen = false;
  std::atomic<int64_t> unrecorded{0};
};
State g_state;

struct ExitReport {
  bool on = false;
  std::string trace_path;
};
ExitReport g_exit;

int64_t now_ns() {
  if (!g_state.epoch_set) {
    g_state.epoch = Clock::now();
    g_state.epoch_set = true;
  }
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - g_state.epoch).count();
}

uint64_t fnv(const char* s, uint64_t h) {
  for (; s && *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 1099511628211ull;
  return h;
}

// name + suffix == stored?
bool same_name(const char* stored, const char* name, const char* suffix) {
  const size_t n = std::strlen(name);
  if (std::strncmp(stored, name, n) != 0) return false;
  return std::strcmp(stored + n, suffix ? suffix : "") == 0;
}

// The table slot of name + suffix (created on first use); -1 when the table is full.
int intern(const char* name, const char* suffix) {
  const uint64_t h = fnv(suffix, fnv(name, 1469598103934665603ull));
  for (int probe = 0; probe < kMaxEntries; ++probe) {
    const int i = static_cast<int>((h + probe) & (kMaxEntries - 1));
    Entry& e = g_state.entries[i];
    if (!e.used) {
      if (g_state.n_entries >= kMaxEntries - 1) return -1;
      e.used = true;
      e.hash = h;
      std::snprintf(e.name, sizeof e.name, "%s%s", name, suffix ? suffix : "");
      ++g_state.n_entries;
      return i;
    }
    if (e.hash == h && same_name(e.name, name, suffix)) return i;
  }
  return -1;
}

void on_cuda_first_use();
void exit_report();

// Reads back the pending CUDA event pairs into the table (and the trace's GPU track).
void resolve() {
  State& s = g_state;
  if (s.n_pending == 0) return;
  cudaev::elapsed(s.n_pending, s.start_ms, s.dur_ms);
  int base = -1;
  for (int i = 0; i < s.n_pending && base < 0; ++i)
    if (s.dur_ms[i] >= 0) base = i;
  for (int i = 0; i < s.n_pending; ++i) {
    if (s.dur_ms[i] < 0) continue;
    Entry& e = s.entries[s.pending[i].entry];
    e.gpu_ms += s.dur_ms[i];
    if (!s.tracing) continue;
    if (static_cast<int64_t>(s.trace.size()) >= s.max_events) {
      ++s.dropped;
      continue;
    }
    TraceEvent ev;
    ev.entry = s.pending[i].entry;
    ev.tid = 2;
    // Aligned on the host clock at the first timed op's enqueue: offsets within a resolve are exact.
    ev.ts_ns = s.pending[base].host_ts + static_cast<int64_t>(s.start_ms[i] * 1e6);
    ev.dur_ns = static_cast<int64_t>(s.dur_ms[i] * 1e6);
    s.trace.push_back(ev);
  }
  s.n_pending = 0;
}

}  // namespace

namespace detail {

int begin(const char* name, const char* suffix, int cuda_device, const Cost& cost) {
  State& s = g_state;
  if (std::this_thread::get_id() != s.owner || s.depth >= kMaxDepth) {
    s.unrecorded.fetch_add(1, std::memory_order_relaxed);
    return -1;
  }
  const int e = intern(name, suffix);
  if (e < 0) {
    s.unrecorded.fetch_add(1, std::memory_order_relaxed);
    return -1;
  }
  const int slot = s.depth;
  if (slot == 0 && cuda_device >= 0 && s.n_pending == cudaev::kPairs) resolve();  // pool full: one sync
  ++s.depth;
  Open& o = s.stack[slot];
  o.entry = e;
  o.flops_unknown = cost.flops < 0;
  o.bytes_unknown = cost.bytes < 0;
  o.flops = std::max(cost.flops, 0.0);
  o.bytes = std::max(cost.bytes, 0.0);
  o.pair = -1;
  o.trace = -1;
  if (s.tracing) {
    if (static_cast<int64_t>(s.trace.size()) < s.max_events) {
      o.trace = static_cast<int64_t>(s.trace.size());
      s.trace.emplace_back();
      s.trace.back().entry = e;
    } else {
      ++s.dropped;
    }
  }
  o.t0 = now_ns();
  if (slot == 0 && cuda_device >= 0) {
    if (cudaev::record_start(s.n_pending, cuda_device)) {
      if (!s.cuda_seen) on_cuda_first_use();
      s.pending[s.n_pending] = {e, o.t0};
      o.pair = s.n_pending++;
    }
  }
  if (o.trace >= 0) s.trace[o.trace].ts_ns = o.t0;
  return slot;
}

void end(int slot) {
  State& s = g_state;
  const int64_t t1 = now_ns();
  if (slot >= s.depth) return;  // cleared while open
  Open& o = s.stack[slot];
  if (o.pair >= 0) cudaev::record_stop(o.pair);
  const int64_t dur = t1 - o.t0;
  if (o.trace >= 0 && o.trace < static_cast<int64_t>(s.trace.size())) s.trace[o.trace].dur_ns = dur;
  s.depth = slot;
  if (slot == 0) {
    Entry& e = s.entries[o.entry];
    ++e.calls;
    if (o.pair >= 0)
      ++e.gpu_calls;  // its time arrives with resolve()
    else
      e.host_ns += dur;
    e.flops_unknown = e.flops_unknown || o.flops_unknown;
    e.bytes_unknown = e.bytes_unknown || o.bytes_unknown;
    e.flops += o.flops;
    e.bytes += o.bytes;
  } else {  // a nested call's work belongs to its top-level op
    Open& top = s.stack[0];
    top.flops_unknown = top.flops_unknown || o.flops_unknown;
    top.bytes_unknown = top.bytes_unknown || o.bytes_unknown;
    top.flops += o.flops;
    top.bytes += o.bytes;
  }
}

bool slot_traced(int slot) { return slot < g_state.depth && g_state.stack[slot].trace >= 0; }

void add_shape(int slot, const int64_t* dims, int ndim) {
  State& s = g_state;
  if (slot >= s.depth || s.stack[slot].trace < 0) return;
  char* a = s.trace[s.stack[slot].trace].args;
  size_t len = std::strlen(a);
  if (len >= 3 && std::strcmp(a + len - 3, "...") == 0) return;  // already truncated
  const size_t cap = kArgsLen - 4;                               // room for "..." and the NUL
  auto put = [&](const char* text) {
    const size_t n = std::strlen(text);
    if (len + n > cap) {
      std::memcpy(a + len, "...", 4);
      len += 3;
      return false;
    }
    std::memcpy(a + len, text, n + 1);
    len += n;
    return true;
  };
  if (len > 0 && !put(" ")) return;
  if (!put("[")) return;
  char num[24];
  for (int i = 0; i < ndim; ++i) {
    std::snprintf(num, sizeof num, i ? ",%lld" : "%lld", static_cast<long long>(dims[i]));
    if (!put(num)) return;
  }
  put("]");
}

}  // namespace detail

namespace {
void on_cuda_first_use() {
  g_state.cuda_seen = true;
  // The CUDA runtime registered its own teardown with atexit when it initialised, i.e. before now. Handlers
  // run last-registered first, so registering the exit report again here runs it while CUDA still works.
  if (g_exit.on) std::atexit(exit_report);
}
}  // namespace

void start(const Options& opt) {
  State& s = g_state;
  if (detail::g_on.load()) {
    if (std::this_thread::get_id() != s.owner)
      throw Error("profiler: start() from another thread than the one already profiled");
    return;
  }
  s.owner = std::this_thread::get_id();
  s.tracing = opt.trace;
  if (opt.trace) {
    s.max_events = std::max<int64_t>(opt.max_trace_events, 1);
    if (static_cast<int64_t>(s.trace.capacity()) < s.max_events) s.trace.reserve(s.max_events);
  }
  now_ns();  // sets the epoch
  s.started = Clock::now();
  detail::g_on.store(true);
}

void stop() {
  State& s = g_state;
  if (!detail::g_on.load()) return;
  detail::g_on.store(false);
  resolve();
  s.wall_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - s.started).count();
}

void clear_table() {
  State& s = g_state;
  resolve();
  for (Entry& e : s.entries) {  // names stay: the trace refers to them
    Entry fresh;
    fresh.used = e.used;
    fresh.hash = e.hash;
    std::memcpy(fresh.name, e.name, sizeof e.name);
    e = fresh;
  }
  s.wall_ns = 0;
  s.unrecorded.store(0);
  if (detail::g_on.load()) s.started = Clock::now();
}

void clear() {
  State& s = g_state;
  clear_table();
  for (Entry& e : s.entries) e = Entry{};
  s.n_entries = 0;
  s.depth = 0;
  s.trace.clear();  // keeps the reserved buffer
  s.tracing = false;
  s.dropped = 0;
}

Summary summary() {
  State& s = g_state;
  Summary out;
  int64_t wall = s.wall_ns;
  if (detail::g_on.load()) {
    if (std::this_thread::get_id() == s.owner) resolve();
    wall += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - s.started).count();
  }
  out.wall_ms = wall * 1e-6;
  for (const Entry& e : s.entries) {
    if (!e.used || e.calls == 0) continue;
    Row r;
    r.name = e.name;
    r.calls = e.calls;
    r.ms = e.host_ns * 1e-6 + e.gpu_ms;
    r.gpu = e.gpu_calls > 0;
    r.flops = e.flops_unknown ? -1.0 : e.flops;
    r.bytes = e.bytes_unknown ? -1.0 : e.bytes;
    r.pct = out.wall_ms > 0 ? 100.0 * r.ms / out.wall_ms : 0.0;
    out.ops_ms += r.ms;
    out.rows.push_back(std::move(r));
  }
  std::sort(out.rows.begin(), out.rows.end(),
            [](const Row& a, const Row& b) { return a.ms != b.ms ? a.ms > b.ms : a.name < b.name; });
  out.trace_events = static_cast<int64_t>(s.trace.size());
  out.dropped_trace_events = s.dropped;
  out.unrecorded_calls = s.unrecorded.load();
  return out;
}

std::string format_table(const Summary& s, const std::string& title) {
  size_t w = 22;
  bool any_gpu = false;
  for (const Row& r : s.rows) w = std::max(w, r.name.size()), any_gpu = any_gpu || r.gpu;
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "profile: %s: wall %.1f ms, in ops %.1f ms (%.1f%%)%s\n", title.c_str(),
                s.wall_ms, s.ops_ms, s.wall_ms > 0 ? 100.0 * s.ops_ms / s.wall_ms : 0.0,
                any_gpu ? "; rows marked * are GPU time from CUDA events" : "");
  out += line;
  const int W = static_cast<int>(w);
  std::snprintf(line, sizeof line, "%-*s %9s %11s %8s %11s %10s %9s\n", W + 1, "op", "calls", "total ms",
                "% wall", "us/call", "GFLOP/s", "GB/s");
  out += line;
  for (const Row& r : s.rows) {
    char gf[32] = "-", gb[32] = "-";
    const double sec = r.ms * 1e-3;
    if (r.flops > 0 && sec > 0) std::snprintf(gf, sizeof gf, "%.2f", r.flops / sec * 1e-9);
    if (r.bytes > 0 && sec > 0) std::snprintf(gb, sizeof gb, "%.2f", r.bytes / sec * 1e-9);
    const std::string name = r.gpu ? r.name + "*" : r.name;
    std::snprintf(line, sizeof line, "%-*s %9lld %11.2f %8.2f %11.1f %10s %9s\n", W + 1, name.c_str(),
                  static_cast<long long>(r.calls), r.ms, r.pct, r.calls ? 1e3 * r.ms / r.calls : 0.0, gf, gb);
    out += line;
  }
  const double other = s.wall_ms - s.ops_ms;
  std::snprintf(line, sizeof line, "%-*s %9s %11.2f %8.2f %11s %10s %9s\n", W + 1, "(outside ops)", "", other,
                s.wall_ms > 0 ? 100.0 * other / s.wall_ms : 0.0, "", "", "");
  out += line;
  if (s.unrecorded_calls > 0) {
    std::snprintf(line, sizeof line,
                  "note: %lld op calls not recorded (issued from another thread, nested > %d deep, or the op "
                  "table was full)\n",
                  static_cast<long long>(s.unrecorded_calls), kMaxDepth);
    out += line;
  }
  if (s.dropped_trace_events > 0) {
    std::snprintf(line, sizeof line, "note: the trace buffer was full: %lld events dropped\n",
                  static_cast<long long>(s.dropped_trace_events));
    out += line;
  }
  return out;
}

namespace {
void json_string(std::FILE* f, const char* s) {
  std::fputc('"', f);
  for (; *s; ++s) {
    const unsigned char c = static_cast<unsigned char>(*s);
    if (c == '"' || c == '\\')
      std::fprintf(f, "\\%c", c);
    else if (c < 0x20)
      std::fprintf(f, "\\u%04x", c);
    else
      std::fputc(c, f);
  }
  std::fputc('"', f);
}
}  // namespace

void write_trace(const std::string& path) {
  State& s = g_state;
  if (!s.tracing) throw Error("profiler: no trace was recorded (start the profiler with Options::trace)");
  if (detail::g_on.load() && std::this_thread::get_id() == s.owner) resolve();
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("profiler: cannot write trace '" + path + "': " + std::strerror(errno));
  std::fputs("{\"traceEvents\":[\n", f);
  std::fputs(
      "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":1,\"args\":{\"name\":\"engine\"}},\n"
      "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":1,\"args\":{\"name\":\"ops (host "
      "clock)\"}},\n"
      "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":2,\"args\":{\"name\":\"CUDA ops (GPU, "
      "events)\"}}",
      f);
  for (const TraceEvent& ev : s.trace) {
    if (ev.dur_ns < 0) continue;  // still open
    std::fputs(",\n{\"name\":", f);
    json_string(f, s.entries[ev.entry].name);
    std::fprintf(f, ",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":1,\"tid\":%d,\"args\":{",
                 ev.tid == 2 ? "gpu" : "op", ev.ts_ns * 1e-3, ev.dur_ns * 1e-3, ev.tid);
    if (ev.args[0]) {
      std::fputs("\"shapes\":", f);
      json_string(f, ev.args);
    }
    std::fputs("}}", f);
  }
  std::fprintf(f, "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"dropped_events\":%lld}}\n",
               static_cast<long long>(s.dropped));
  const bool write_ok = std::fflush(f) == 0 && !std::ferror(f);
  const int err = errno;
  if (std::fclose(f) != 0 || !write_ok) {
    std::remove(tmp.c_str());
    throw Error("profiler: cannot write trace '" + path + "': " + std::strerror(write_ok ? errno : err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rerr = errno;
    std::remove(tmp.c_str());
    throw Error("profiler: cannot write trace '" + path + "': " + std::strerror(rerr));
  }
}

std::string check_trace_path(const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) return "empty path";
  std::error_code ec;
  if (fs::is_directory(path, ec)) return "is a directory";
  fs::path parent = fs::path(path).parent_path();
  if (parent.empty()) parent = ".";
  const std::string dir = "directory '" + parent.string() + "'";
  if (!fs::exists(parent, ec)) return dir + " does not exist";
  if (!fs::is_directory(parent, ec)) return dir + " is not a directory";
  if (::access(parent.c_str(), W_OK) != 0) return dir + " is not writable: " + std::strerror(errno);
  return "";
}

void disable_exit_report() { g_exit.on = false; }

namespace {
// At exit (ENGINE_PROFILE): the table of the whole run on stderr, and the trace file.
void exit_report() {
  if (!g_exit.on) return;
  g_exit.on = false;
  try {
    stop();
    std::fputs(format_table(summary(), "whole run (ENGINE_PROFILE)").c_str(), stderr);
    if (!g_exit.trace_path.empty()) {
      write_trace(g_exit.trace_path);
      std::fprintf(stderr, "profile: wrote trace %s\n", g_exit.trace_path.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
  }
}

// Reads ENGINE_PROFILE / ENGINE_PROFILE_TRACE before main(); bad values exit 2 with one line.
struct EnvSwitch {
  EnvSwitch() {
    const char* p = std::getenv("ENGINE_PROFILE");
    const char* t = std::getenv("ENGINE_PROFILE_TRACE");
    bool on = false;
    if (p && *p) {
      if (std::strcmp(p, "1") == 0) {
        on = true;
      } else if (std::strcmp(p, "0") != 0) {
        std::fprintf(stderr, "engine: ENGINE_PROFILE='%s': must be 0 or 1\n", p);
        std::exit(2);
      }
    }
    if (t && *t) {
      const std::string why = check_trace_path(t);
      if (!why.empty()) {
        std::fprintf(stderr, "engine: ENGINE_PROFILE_TRACE='%s': %s\n", t, why.c_str());
        std::exit(2);
      }
      g_exit.trace_path = t;
      on = true;
    }
    if (!on) return;
    g_exit.on = true;
    start(Options{.trace = !g_exit.trace_path.empty()});
    std::atexit(exit_report);
  }
};
EnvSwitch g_env_switch;
}  // namespace

}  // namespace engine::prof
