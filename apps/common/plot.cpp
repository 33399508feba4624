// PLplot (memcairo device) line plots and text rendering for the apps' PNG outputs (see plot.h).
#include "apps/common/plot.h"

#if ENGINE_HAS_PLPLOT
#include <plplot/plplot.h>
#endif

#include <algorithm>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <string>

#include "apps/common/flow_matching.h"  // kSigmaMin, kSigmaMax
#include "apps/common/image_grid.h"     // write_rgb_png

// PLplot's cairo driver loads fonts through fontconfig and its drivers through libltdl, both of which keep
// process-lifetime caches that LeakSanitizer reports as leaks; they are not ours.
#if defined(__SANITIZE_ADDRESS__)
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libfontconfig.so\nleak:libltdl.so\nleak:libplplot\nleak:libcairo\nleak:libpango\n";
}
#endif

namespace engine::app {
namespace {

constexpr double kDpi = 90.0;
std::mutex g_plplot_mu;  // PLplot keeps global stream state

#if ENGINE_HAS_PLPLOT
// Whether PLplot's memcairo device exists (PLplot exits the process when plinit() finds no such device).
bool have_memcairo() {
  static const bool ok = [] {
    std::vector<const char*> menu_v(256, nullptr), name_v(256, nullptr);
    const char** menus = menu_v.data();
    const char** names = name_v.data();
    int n = static_cast<int>(name_v.size());  // in: capacity, out: count
    plgDevs(&menus, &names, &n);
    for (int i = 0; i < n && i < static_cast<int>(name_v.size()); ++i)
      if (names[i] && std::string(names[i]) == "memcairo") return true;
    return false;
  }();
  return ok;
}
#endif

void require_plots() {
  if (!plots_available())
    throw std::runtime_error(
#if ENGINE_HAS_PLPLOT
        "PLplot has no memcairo device, so plots and grid labels cannot be drawn: install the "
        "plplot-driver-cairo package"
#else
        "this build has no PLplot, so plots and grid labels cannot be drawn: install libplplot-dev and "
        "plplot-driver-cairo (scripts/install_deps.sh) and reconfigure"
#endif
    );
}

// Starts a PLplot stream drawing into `buf` (width * height * 3, white). plend1() ends it.
#if ENGINE_HAS_PLPLOT
void begin(std::vector<uint8_t>& buf, int width, int height) {
  PLINT strm = 0;
  plmkstrm(&strm);
  plsdev("memcairo");
  plspage(kDpi, kDpi, width, height, 0, 0);
  plsmem(width, height, buf.data());
  plscolbg(255, 255, 255);
  plinit();
  pladv(0);
  plscol0(1, 0, 0, 0);        // text, axes
  plscol0(2, 215, 215, 215);  // grid
}
#endif

void check_size(int width, int height, const char* what) {
  if (width < 64 || height < 64 || width > 8192 || height > 8192)
    throw std::runtime_error(std::string(what) + ": invalid size " + std::to_string(width) + "x" +
                             std::to_string(height));
}

[[maybe_unused]] double mm_for_px(double px) { return px * 25.4 / kDpi; }

}  // namespace

bool plots_available() {
#if ENGINE_HAS_PLPLOT
  return have_memcairo();
#else
  return false;
#endif
}

std::vector<uint8_t> render_plot_rgb(const PlotSpec& spec) {
  check_size(spec.width, spec.height, "plot");
  require_plots();
#if ENGINE_HAS_PLPLOT
  auto tr = [&](double y) { return spec.log_y ? std::log10(y) : y; };
  auto ok = [&](double x, double y) {
    return std::isfinite(x) && std::isfinite(y) && (!spec.log_y || y > 0);
  };
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const PlotSeries& s : spec.series)
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
      if (ok(s.x[i], s.y[i])) {
        x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
        y0 = std::min(y0, tr(s.y[i])), y1 = std::max(y1, tr(s.y[i]));
      }
  if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (spec.x_range[0] < spec.x_range[1]) x0 = spec.x_range[0], x1 = spec.x_range[1];
  if (x1 - x0 <= 0) x0 -= 0.5, x1 += 0.5;
  if (y1 - y0 < 1e-12 * std::max(1.0, std::abs(y1))) {
    const double d = std::max(std::abs(y1) * 0.1, 1e-3);
    y0 -= d, y1 += d;
  }
  const double my = (y1 - y0) * 0.05;
  y0 -= my, y1 += my;

  std::vector<uint8_t> buf(static_cast<size_t>(spec.width) * spec.height * 3, 255);
  std::lock_guard<std::mutex> lk(g_plplot_mu);
  begin(buf, spec.width, spec.height);
  plschr(mm_for_px(13), 1.0);
  plvpor(0.10, 0.78, 0.13, 0.90);  // the legend goes right of the plot area
  plwind(x0, x1, y0, y1);
  const char* yopt_grid = spec.log_y ? "gl" : "g";
  const char* yopt = spec.log_y ? "bcnstvl" : "bcnstv";
  plcol0(2);
  plwidth(1);
  plbox("g", 0, 0, yopt_grid, 0, 0);
  plcol0(1);
  plbox("bcnst", 0, 0, yopt, 0, 0);
  pllab(spec.xlabel.c_str(), spec.ylabel.c_str(), spec.title.c_str());

  const PLINT first_color = 3;
  std::vector<PLINT> opts, colors, styles, sym_colors, sym_numbers;
  std::vector<PLFLT> widths, sym_scales;
  std::vector<const char*> texts, symbols;
  for (size_t k = 0; k < spec.series.size() && k < 12; ++k) {
    const PlotSeries& s = spec.series[k];
    const PLINT col = first_color + static_cast<PLINT>(k);
    plscol0(col, s.rgb[0], s.rgb[1], s.rgb[2]);
    plcol0(col);
    plwidth(s.width);
    std::vector<PLFLT> xs, ys;
    auto flush = [&] {
      if (xs.size() >= 2) plline(static_cast<PLINT>(xs.size()), xs.data(), ys.data());
      if (s.markers && !xs.empty())
        plpoin(static_cast<PLINT>(xs.size()), xs.data(), ys.data(), 4);
      else if (xs.size() == 1)
        plpoin(1, xs.data(), ys.data(), 1);
      xs.clear(), ys.clear();
    };
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!ok(s.x[i], s.y[i])) {
        flush();
        continue;
      }
      xs.push_back(s.x[i]);
      ys.push_back(tr(s.y[i]));
    }
    flush();
    opts.push_back(PL_LEGEND_LINE);
    colors.push_back(col);
    styles.push_back(1);
    widths.push_back(s.width);
    sym_colors.push_back(col);
    sym_scales.push_back(1.0);
    sym_numbers.push_back(3);
    texts.push_back(s.name.c_str());
    symbols.push_back("#(727)");  // a small circle (Hershey glyph)
  }
  if (!texts.empty()) {
    PLFLT lw = 0, lh = 0;
    plwidth(1);
    const std::vector<PLINT> text_colors(texts.size(), 1);
    pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, PL_POSITION_RIGHT | PL_POSITION_OUTSIDE,
             0.02, 0.0, 0.05, 0, 1, 1, 0, 0, static_cast<PLINT>(texts.size()), opts.data(), 1.0, 0.9, 1.8,
             0.0, text_colors.data(), texts.data(), nullptr, nullptr, nullptr, nullptr, colors.data(),
             styles.data(), widths.data(), sym_colors.data(), sym_scales.data(), sym_numbers.data(),
             symbols.data());
  }
  plend1();
  return buf;
#else
  return {};
#endif
}

void write_plot_png(const std::string& path, const PlotSpec& spec) {
  write_rgb_png(path, render_plot_rgb(spec), spec.width, spec.height);
}

std::vector<uint8_t> render_text_rgb(int width, int height, const std::vector<TextItem>& items,
                                     double size_px) {
  check_size(width, height, "text");
  require_plots();
#if ENGINE_HAS_PLPLOT
  std::vector<uint8_t> buf(static_cast<size_t>(width) * height * 3, 255);
  std::lock_guard<std::mutex> lk(g_plplot_mu);
  begin(buf, width, height);
  plvpor(0, 1, 0, 1);
  plwind(0, width, 0, height);
  plschr(mm_for_px(size_px), 1.0);
  plcol0(1);
  for (const TextItem& t : items) plptex(t.x, height - t.y, 1, 0, 0.0, t.text.c_str());
  plend1();
  return buf;
#else
  (void)items, (void)size_px;
  return {};
#endif
}

void write_loss_plot_png(const std::string& path, const std::vector<int64_t>& steps,
                         const std::vector<double>& losses, const std::string& title, bool log_y) {
  PlotSpec spec;
  spec.title = title;
  spec.xlabel = "step";
  spec.ylabel = "training loss (MSE)";
  const size_t n = std::min(steps.size(), losses.size());
  bool positive = true;
  for (size_t i = 0; i < n; ++i)
    if (std::isfinite(losses[i]) && losses[i] <= 0) positive = false;
  spec.log_y = log_y && positive;
  PlotSeries raw{"loss per step", {}, {}, {150, 185, 235}, 1.0, false};
  for (size_t i = 0; i < n; ++i) {
    raw.x.push_back(static_cast<double>(steps[i]));
    raw.y.push_back(losses[i]);
  }
  PlotSeries sm{"smoothed (EMA)", raw.x, std::vector<double>(n, NAN), {20, 60, 170}, 2.5, false};
  const double alpha = 2.0 / (std::max<double>(10.0, n / 50.0) + 1.0);  // span: 2% of the run, >= 10 steps
  double acc = 0, wsum = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(losses[i])) continue;
    acc = (1 - alpha) * acc + alpha * losses[i];
    wsum = (1 - alpha) * wsum + alpha;
    sm.y[i] = acc / wsum;
  }
  spec.series = {raw, sm};
  write_plot_png(path, spec);
}

void write_sigma_bin_plot_png(const std::string& path, const std::vector<int64_t>& steps,
                              const std::vector<std::vector<double>>& bins, const std::string& title,
                              bool log_y) {
  PlotSpec spec;
  spec.title = title;
  spec.xlabel = "sigma (noise level t; 0 = clean image, 1 = pure noise)";
  spec.ylabel = "mean loss in the sigma bin";
  const size_t n = std::min(steps.size(), bins.size());
  const size_t K = n ? bins[0].size() : 0;
  const size_t parts = std::min<size_t>(4, n);
  static const uint8_t palette[4][3] = {{230, 150, 60}, {200, 80, 60}, {120, 60, 160}, {20, 60, 170}};
  bool positive = true;
  for (size_t q = 0; q < parts; ++q) {
    const size_t a = n * q / parts, b = n * (q + 1) / parts;
    PlotSeries s;
    s.name = "steps " + std::to_string(steps[a]) + "-" + std::to_string(steps[b - 1]);
    std::copy(palette[q + 4 - parts], palette[q + 4 - parts] + 3, s.rgb);
    s.width = 2.0;
    s.markers = true;
    for (size_t k = 0; k < K; ++k) {
      double sum = 0;
      int64_t cnt = 0;
      for (size_t i = a; i < b; ++i)
        if (k < bins[i].size() && std::isfinite(bins[i][k])) sum += bins[i][k], ++cnt;
      s.x.push_back(kSigmaMin + (kSigmaMax - kSigmaMin) * (k + 0.5) / double(K));
      s.y.push_back(cnt ? sum / cnt : NAN);
      if (cnt && sum <= 0) positive = false;
    }
    spec.series.push_back(std::move(s));
  }
  spec.log_y = log_y && positive;
  spec.x_range[0] = 0.0;
  spec.x_range[1] = 1.0;
  write_plot_png(path, spec);
}

}  // namespace engine::app
