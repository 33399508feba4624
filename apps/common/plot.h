// Line plots for the apps (loss curve, loss per sigma bin), drawn with PLplot's memcairo device into an RGB
// buffer and written as PNG: axes with tick labels, axis titles, a title and a legend.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace engine::app {

// True when this build has PLplot and its memcairo device is installed. Without it the render/write
// functions below throw std::runtime_error saying what to install; fm_train then skips its plots with a
// note and grids fall back to bare grids with a text sidecar (see write_grid_png).
bool plots_available();

struct PlotSeries {
  std::string name;  // legend entry
  std::vector<double> x,
      y;  // same length; points with a non-finite x or y (or y <= 0 on a log axis) are gaps
  uint8_t rgb[3] = {0, 0, 0};
  double width = 1.0;    // line width in pixels
  bool markers = false;  // also draw a small circle at every point
};

struct PlotSpec {
  std::string title, xlabel, ylabel;
  bool log_y = false;              // log10 y axis (needs positive values)
  double x_range[2] = {0.0, 0.0};  // fixed x range when x_range[0] < x_range[1], else from the data
  int width = 800, height = 450;
  std::vector<PlotSeries> series;
};

// Renders `spec` to width * height * 3 RGB bytes (row-major, white background). Empty or all-non-finite
// series give empty axes over [0, 1]. Throws std::runtime_error on a bad size (outside 64..8192 pixels).
std::vector<uint8_t> render_plot_rgb(const PlotSpec& spec);

// render_plot_rgb + PNG, written atomically; throws std::runtime_error with the OS reason on failure.
void write_plot_png(const std::string& path, const PlotSpec& spec);

// Renders text lines onto a white RGB canvas (width * height * 3 bytes): each (x, y, text) is drawn with its
// left edge at pixel column x and its vertical centre at pixel row y, `size_px` high. Used to label grids.
struct TextItem {
  double x, y;
  std::string text;
};
std::vector<uint8_t> render_text_rgb(int width, int height, const std::vector<TextItem>& items,
                                     double size_px);

// Loss curve of a run: the raw per-step losses and a debiased EMA (span ~2% of the run) against the step, on
// a log10 y axis with `log_y` when every finite loss is positive. `steps` and `losses` have the same length.
void write_loss_plot_png(const std::string& path, const std::vector<int64_t>& steps,
                         const std::vector<double>& losses, const std::string& title, bool log_y = false);

// Loss per sigma bin: `bins` rows of per-step mean losses (NaN = no sample of that step fell in the bin), one
// vector per step, each of the same length K (the bins split [kSigmaMin, kSigmaMax] evenly). Draws one curve
// per quarter of the run (at most 4; fewer for runs shorter than 4 steps): the mean over that quarter's steps
// of each bin's loss, against the bin centre (x axis 0..1; log10 y axis with `log_y`).
void write_sigma_bin_plot_png(const std::string& path, const std::vector<int64_t>& steps,
                              const std::vector<std::vector<double>>& bins, const std::string& title,
                              bool log_y = false);

}  // namespace engine::app
