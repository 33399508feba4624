// The op-level profiler (docs/profiling.md): where a step's time goes, per op, without an external tool.
//
// Hooked at two places only: the op dispatch (core/ops/dispatch.h: every kernel an op launches, plus the
// strided copy) and the autograd backward-node call (core/autograd.cpp: "<op>.backward"). Each hook is a
// Scope; when the profiler is off a Scope costs one relaxed atomic load and a branch, and allocates nothing.
// When on, calls are aggregated into a fixed table (no allocation per op); a Chrome trace, when asked for,
// goes into a buffer reserved once at start().
//
// Accounting: only TOP-LEVEL scopes (no other scope open) are aggregated into the table, with their
// inclusive time; nested scopes (the kernels a backward node launches, the matmuls of "matmul.backward")
// are inside their parent's time and appear only in the trace, nested. So the rows' times never overlap,
// and their % of the profiled wall time sum to at most 100; the rest is shown as "(outside ops)": tensor
// allocation, fill_, dtype casts, the autograd engine's own work, app code.
//
// CPU tensors: a steady clock around the op's work. CUDA tensors: a cudaEvent pair on the engine stream
// around each top-level scope (no host sync inside the op); the pairs are resolved at stop() (one sync),
// or when the fixed pool of pairs is full (one sync between two ops). The CUDA part compiles but is
// UNVERIFIED ON A GPU (runtime/profiler_cuda.cu).
//
// Threads: ops are assumed to be issued from ONE thread (OpenMP parallelism inside kernels is fine). The
// thread that calls start() is the profiled thread; scopes opened on any other thread are not recorded
// (they are counted in Summary::unrecorded_calls).
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace engine::prof {

// Work of one op call, for the achieved-rate columns: floating-point operations (counted as the op table's
// op_cost does) and the bytes of every input and output read or written once (the traffic floor). Negative
// = unknown: a row whose calls (or their nested calls) left one unknown prints "-" in that column.
struct Cost {
  double flops = -1.0, bytes = -1.0;
};
// A scope that does no kernel work of its own (a backward node: its kernels are nested scopes).
inline constexpr Cost kNoWork{0.0, 0.0};

namespace detail {
extern std::atomic<bool> g_on;
int begin(const char* name, const char* suffix, int cuda_device, const Cost& cost);
void end(int slot);
bool slot_traced(int slot);
void add_shape(int slot, const int64_t* dims, int ndim);
}  // namespace detail

// True while the profiler records (between start() and stop()).
inline bool enabled() { return detail::g_on.load(std::memory_order_relaxed); }

// Times the enclosing block as one call of op `name` + `suffix` (suffix may be null; both must stay valid
// for the scope's lifetime). cuda_device: the GPU whose engine stream the op's kernels run on, or -1 for
// CPU work. Not copyable; use on the stack.
class Scope {
 public:
  explicit Scope(const char* name, const char* suffix = nullptr, int cuda_device = -1, Cost cost = {}) {
    if (enabled()) [[unlikely]]
      slot_ = detail::begin(name, suffix, cuda_device, cost);
  }
  // The same with the cost computed by `cost_fn()` only when the profiler is on.
  template <typename CostFn>
  requires std::is_invocable_r_v<Cost, CostFn> Scope(const char* name, const char* suffix, int cuda_device,
                                                     CostFn&& cost_fn) {
    if (enabled()) [[unlikely]]
      slot_ = detail::begin(name, suffix, cuda_device, cost_fn());
  }
  ~Scope() {
    if (slot_ >= 0) [[unlikely]]
      detail::end(slot_);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
  // True when this call goes into the trace: only then is add_shape worth calling.
  bool traced() const { return slot_ >= 0 && detail::slot_traced(slot_); }
  // Appends one input shape to the call's trace args ("[32,64,28,28]"); truncated past a fixed length.
  void add_shape(const int64_t* dims, int ndim) {
    if (slot_ >= 0) detail::add_shape(slot_, dims, ndim);
  }

 private:
  int slot_ = -1;
};

struct Options {
  bool trace = false;                           // keep per-call events for write_trace()
  int64_t max_trace_events = int64_t{1} << 19;  // the trace buffer (136 B/event); later calls are dropped
};

// Starts (or resumes) recording on the calling thread, which becomes the profiled thread. The table and
// the trace are kept across stop()/start() (events are added only while started with Options::trace);
// clear() empties them. Throws engine::Error if called while
// active from another thread.
void start(const Options& opt = {});
// Stops recording: resolves pending CUDA events (one device sync when there are any) and adds the time
// since start() to the profiled wall time. No-op when not active.
void stop();
// Empties the table, the trace and the wall time (keeps the on/off state).
void clear();
// Zeroes the table and the wall time but keeps the trace (to report two phases apart in one trace).
void clear_table();

struct Row {
  std::string name;
  int64_t calls = 0;
  double ms = 0;                  // total: GPU time for CUDA ops, host time otherwise
  double pct = 0;                 // of the profiled wall time
  double flops = -1, bytes = -1;  // summed work; -1 when some call left it unknown
  bool gpu = false;               // timed with CUDA events
};
struct Summary {
  double wall_ms = 0;     // profiled wall time (sum of start()..stop() intervals)
  double ops_ms = 0;      // sum of the rows' ms
  std::vector<Row> rows;  // sorted by ms, descending (ties: by name)
  int64_t trace_events = 0, dropped_trace_events = 0;
  // Scopes not recorded: opened on a thread other than the profiled one, nested deeper than 64, or a new
  // op name when the table (512 names) is full.
  int64_t unrecorded_calls = 0;
};
// The table so far (resolves pending CUDA events first if recording).
Summary summary();
// The table as text: a title line, one row per op (calls, total ms, % of wall, us/call, GFLOP/s, GB/s; "-"
// where the cost is unknown) and an "(outside ops)" row.
std::string format_table(const Summary& s, const std::string& title);

// Writes the recorded events as Chrome trace JSON (traceEvents of ph "X", ts/dur in microseconds, pid 1,
// tid 1 = host ops, tid 2 = GPU time of CUDA ops, args.shapes = input shapes) that Perfetto and
// chrome://tracing open. Atomic: a temporary file in the same directory, then rename. Throws engine::Error
// naming the path when it cannot be written, or when start() was not given Options::trace.
void write_trace(const std::string& path);

// Checks that `path` can take the trace before any work: not empty, not a directory, its parent directory
// exists and is writable. Returns "" when fine, else the reason (one line).
std::string check_trace_path(const std::string& path);

// The environment switch, read once at program start (static initialiser of runtime/profiler.cpp):
// ENGINE_PROFILE=1 profiles the whole run and prints the table to stderr at exit; ENGINE_PROFILE_TRACE=path
// also writes the trace there at exit (implies ENGINE_PROFILE=1). A bad value or an unwritable trace path:
// one line on stderr and exit status 2, before main() runs. An app that reports its own profile (fm_bench
// --profile) calls this to drop the exit report.
void disable_exit_report();

}  // namespace engine::prof
