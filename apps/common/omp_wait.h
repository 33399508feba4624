// The apps' default OpenMP wait policy (docs/apps.md "Threads"): passive waiting unless the user chose
// otherwise, so that a thread idle at a barrier sleeps instead of spinning on a core that another thread
// or process could use.
#pragma once

namespace engine::app {

// What the apps put in OMP_WAIT_POLICY when the environment sets neither OMP_WAIT_POLICY nor
// GOMP_SPINCOUNT.
inline constexpr const char* kDefaultOmpWaitPolicy = "passive";

// Call first thing in main(argv), before any thread or OpenMP region exists. When the environment sets
// neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT (an empty value counts as set), sets
// OMP_WAIT_POLICY=kDefaultOmpWaitPolicy and re-executes this program (/proc/self/exe, the same argv and
// descriptors, the same pid): libgomp reads its environment once, when it is loaded, so a setenv() in
// main() alone would not reach it. Returns without doing anything when either variable is set; if the
// re-exec fails, returns with the variable set (child processes inherit it; this process keeps the
// runtime's default). Never throws, prints nothing.
void apply_omp_wait_default(char** argv);

}  // namespace engine::app
