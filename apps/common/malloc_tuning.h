// The apps' heap settings (docs/apps.md "Memory"): keep freed tensor memory in the process for reuse
// instead of returning it to the kernel after every op.
#pragma once

namespace engine::app {

// With glibc, sets M_MMAP_THRESHOLD to 1 GiB and M_TRIM_THRESHOLD to 2 GiB - 1 (the largest int) (mallopt),
// so that tensors up to 1 GiB come from the heap and freed ones are reused, not unmapped and faulted in again
// (page by page, zeroed by the kernel) at the next op: a training step or sampling call frees and reallocates
// the same activation sizes every time. The process's peak memory is unchanged (it is the peak of what is
// live); what changes is that memory freed after the peak stays mapped until exit. Does nothing when the user
// has set any malloc tunable (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_,
// MALLOC_ARENA_MAX, or "glibc.malloc." in GLIBC_TUNABLES), and does nothing without glibc. Returns true when
// it applied the settings. Never throws, prints nothing. Call once, early in main().
bool apply_malloc_defaults();

}  // namespace engine::app
