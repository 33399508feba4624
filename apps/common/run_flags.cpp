// Shared --device/--threads and sampling flags (see run_flags.h).
#include "apps/common/run_flags.h"

#include <omp.h>

#include <cstdio>

#include "apps/common/cli_checks.h"
#include "kernels/cpu/cpu_kernels.h"
#include "runtime/cuda_device.h"
#include "runtime/error.h"

namespace engine::app {

int parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return -1;
}

void add_compute_flags(CLI::App& app, ComputeFlags& f) {
  app.add_option("--device", f.device, "cpu, cuda, cuda:N or auto (cuda when a GPU is present)")
      ->capture_default_str();
  app.add_option("--threads", f.threads, "OpenMP threads for CPU compute (0 = all cores)")
      ->check(int_in(0, 4096))
      ->capture_default_str();
  add_precision_flag(app, f.precision);
}

void add_precision_flag(CLI::App& app, std::string& precision) {
  app.add_option("--precision", precision,
                 "fp32, or bf16: float32 GEMM/conv inputs rounded to bf16 with float32 accumulation and "
                 "float32 weights (CPUs with AVX512_BF16; elsewhere fp32 with a notice)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
}

std::string apply_precision_flag(const std::string& precision, Device device) {
  namespace kc = kern::cpu;
  if (precision != "fp32" && precision != "bf16")
    throw UsageError("--precision '" + precision + "': expected fp32 or bf16");
  if (precision == "fp32") {
    kc::set_matmul_precision(kc::MatmulPrecision::Fp32);
    return "fp32";
  }
  if (device.is_cuda()) throw UsageError("--precision bf16 is not implemented for CUDA yet (issue 9)");
  kc::set_matmul_precision(kc::MatmulPrecision::Bf16);
  if (kc::matmul_precision_active() == kc::MatmulPrecision::Bf16) return "bf16";
  if (!kc::cpu_has_bf16())
    std::fprintf(stderr, "note: --precision bf16 needs AVX512_BF16; this CPU lacks it, running fp32\n");
  else
    std::fprintf(stderr,
                 "note: --precision bf16 needs the avx512 GEMM path (ENGINE_CPU_ISA=%s), running fp32\n",
                 kc::cpu_isa_name(kc::cpu_isa()));
  kc::set_matmul_precision(kc::MatmulPrecision::Fp32);
  return "fp32";
}

Device apply_compute_flags(const ComputeFlags& f) {
  if (f.threads > 0) omp_set_num_threads(f.threads);
  Device device;
  try {
    device = Device::parse(f.device);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  apply_precision_flag(f.precision, device);  // first: bf16 on CUDA is its own error
  if (device.is_cuda() && device.index >= cuda::device_count())
    throw UsageError("--device " + f.device + ": no such CUDA device" +
                     (cuda::built_with_cuda() ? "" : " (built without CUDA)"));
  return device;
}

std::string running_precision(Device device) {
  namespace kc = kern::cpu;
  return device.is_cuda() ? "fp32" : kc::matmul_precision_name(kc::matmul_precision_active());
}

std::string device_description(Device device) {
  return device.str() + (running_precision(device) == "bf16" ? " (bf16)" : "");
}

void add_sampling_flags(CLI::App& app, SamplingFlags& f, const std::string& seed_help) {
  app.add_option("--steps", f.steps, "ODE steps from t=0.994 to 0")
      ->check(int_in(1, 100000))
      ->capture_default_str();
  app.add_option("--cfg-scale", f.cfg_scale,
                 "guidance scale s: pred = s*cond + (1-s)*uncond (1 = no guidance)")
      ->check(finite(-1000, 1000))
      ->capture_default_str();
  app.add_option("--solver", f.solver,
                 "euler (the reference loop), heun (2nd order; Euler for the last step to t=0) or midpoint")
      ->capture_default_str();
  app.add_option("--seed", f.seed, seed_help)
      ->check(int_in(0, 18446744073709551615.0))
      ->capture_default_str();
  app.add_option("--batch", f.batch,
                 "max images per model call (each call evaluates 2x that for CFG); 0 = auto: 128 on the CPU, "
                 "all at once on CUDA. The samples do not depend on it")
      ->check(int_in(0))
      ->capture_default_str();
}

void apply_sampling_flags(const SamplingFlags& f, SampleOptions& opt) {
  opt.steps = f.steps;
  opt.cfg_scale = f.cfg_scale;
  opt.max_batch = f.batch;
  try {
    opt.solver = parse_solver(f.solver);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
}

void add_ema_flags(CLI::App& app, EmaFlags& f) {
  app.add_flag("--ema", f.ema, "use the EMA weights (the default when the checkpoint has them)");
  app.add_flag("--no-ema", f.no_ema, "use the raw (non-EMA) weights");
}

void check_ema_flags(const EmaFlags& f) {
  if (f.ema && f.no_ema) throw UsageError("--ema and --no-ema exclude each other");
}

bool use_ema_weights(const EmaFlags& f, bool checkpoint_has_ema) {
  return f.ema ? true : f.no_ema ? false : checkpoint_has_ema;
}

}  // namespace engine::app
