// Command-line flags shared by the apps that run a model: --device and --threads (fm_sample, fm_eval,
// fm_classifier), and the sampling flags --steps, --solver, --cfg-scale, --seed and --batch (fm_sample,
// fm_eval). One definition each: same names, checks, defaults and help everywhere.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "apps/common/flow_matching.h"
#include "core/dtype.h"

namespace engine::app {

// Parses the command line. Returns -1 to go on, else the exit status to leave with: 0 after --help or
// --version (printed by CLI11), 2 for a usage error (CLI11 prints it).
int parse_command_line(CLI::App& app, int argc, char** argv);

struct ComputeFlags {
  std::string device = "auto";     // cpu, cuda, cuda:N or auto
  int threads = 0;                 // OpenMP threads for CPU compute; 0 = all cores
  std::string precision = "fp32";  // float32 GEMM/conv precision: fp32 or bf16
};
// Adds --device (help "cpu, cuda, cuda:N or auto ..."), --threads (0..4096) and --precision.
void add_compute_flags(CLI::App& app, ComputeFlags& f);
// Applies --threads, parses --device and applies --precision (apply_precision_flag). Throws UsageError
// for an unknown device, a CUDA device this machine (or build) does not have, or bf16 on CUDA.
Device apply_compute_flags(const ComputeFlags& f);

// Adds --precision fp32|bf16 (default fp32; CLI11 rejects other values with exit 2).
void add_precision_flag(CLI::App& app, std::string& precision);
// Applies --precision for `device` and returns the precision that will run ("fp32" or "bf16"). bf16 on
// the CPU sets kern::cpu::set_matmul_precision(Bf16): float32 GEMM and conv inputs rounded to bf16,
// float32 accumulation, float32 weights (docs/apps.md "Precision"). Where the CPU path cannot run it
// (no AVX512_BF16, or ENGINE_CPU_ISA below avx512) it prints one "note: ..." line to stderr and runs fp32.
// Throws UsageError for bf16 on CUDA ("not implemented for CUDA yet (issue 9)") or an unknown value.
std::string apply_precision_flag(const std::string& precision, Device device);
// "fp32" or "bf16": the precision float32 matmuls run at on `device` now (CUDA: always fp32).
std::string running_precision(Device device);
// device.str(), with " (bf16)" appended when running_precision(device) is bf16: for run headers.
std::string device_description(Device device);

struct SamplingFlags {
  int64_t steps = 15;
  std::string solver = "euler";
  double cfg_scale = 3.0;
  uint64_t seed = 0;
  int64_t batch = 0;  // max images per model call; 0 = all
};
// Adds --steps (1..100000), --solver, --cfg-scale (finite, |s| <= 1000), --seed (uint64) and --batch (>= 0)
// with `seed_help` for --seed.
void add_sampling_flags(CLI::App& app, SamplingFlags& f, const std::string& seed_help);
// Fills opt's steps, cfg_scale, solver and max_batch. Throws UsageError for an unknown solver.
void apply_sampling_flags(const SamplingFlags& f, SampleOptions& opt);

// --ema / --no-ema as two plain flags, each with its own help line (CLI11's "--ema,!--no-ema" renders
// as "--ema,--no-ema{false}").
struct EmaFlags {
  bool ema = false, no_ema = false;
};
void add_ema_flags(CLI::App& app, EmaFlags& f);
// Throws UsageError when both flags are given (checked before any work).
void check_ema_flags(const EmaFlags& f);
// Whether to use the EMA weights: as asked, else `checkpoint_has_ema`.
bool use_ema_weights(const EmaFlags& f, bool checkpoint_has_ema);

}  // namespace engine::app
