// The apps' default OpenMP wait policy (docs/apps.md "Threads"), unless the user chose otherwise: a thread
// idle at a barrier polls for about 10 us (GOMP_SPINCOUNT=1000) and then sleeps, instead of sleeping at once
// (passive: every parallel region then starts with a wake-up, which cost 15-25% of a batch-16 training step
// on an idle 2-core VM) or spinning for long on a core that another thread or process could use (libgomp's
// default of 300,000 polls: 2-5x slower on a busy machine).
#pragma once

namespace engine::app {

// What the apps put in OMP_WAIT_POLICY and GOMP_SPINCOUNT when the environment sets neither. libgomp takes
// GOMP_SPINCOUNT over the policy (a bounded spin, then sleep); LLVM's libomp ignores GOMP_SPINCOUNT and
// waits passively.
inline constexpr const char* kDefaultOmpWaitPolicy = "passive";
inline constexpr const char* kDefaultGompSpinCount = "1000";

// Call first thing in main(argv), before any thread or OpenMP region exists. When the environment sets
// neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT (an empty value counts as set), sets
// OMP_WAIT_POLICY=kDefaultOmpWaitPolicy and GOMP_SPINCOUNT=kDefaultGompSpinCount and re-executes this program
// (/proc/self/exe, the same argv and descriptors, the same pid): libgomp reads its environment once, when it
// is loaded, so a setenv() in main() alone would not reach it. Returns without doing anything when either
// variable is set; if the re-exec fails, returns with the variables set (child processes inherit it; this
// process keeps the runtime's default). Never throws, prints nothing.
void apply_omp_wait_default(char** argv);

}  // namespace engine::app
