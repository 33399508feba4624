// Shared --device/--threads and sampling flags (see run_flags.h).
#include "apps/common/run_flags.h"

#include <omp.h>

#include "apps/common/cli_checks.h"
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
}

Device apply_compute_flags(const ComputeFlags& f) {
  if (f.threads > 0) omp_set_num_threads(f.threads);
  Device device;
  try {
    device = Device::parse(f.device);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  if (device.is_cuda() && device.index >= cuda::device_count())
    throw UsageError("--device " + f.device + ": no such CUDA device" +
                     (cuda::built_with_cuda() ? "" : " (built without CUDA)"));
  return device;
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
