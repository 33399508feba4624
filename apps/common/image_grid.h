// PNG output for the apps: a grid of grayscale sample images and a simple loss-curve plot.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace engine::app {

// `images` holds n images of h x w pixels in [-1, 1] (clipped; NaN is drawn black). The grid has
// min(ncols, n) columns and ceil(n / ncols) rows, with `pad` black pixels around every cell.
// Written atomically; throws std::runtime_error on failure.
void write_grid_png(const std::string& path, const float* images, int64_t n, int64_t h, int64_t w,
                    int64_t ncols, int pad = 2);

// Plots ys against their index: axes, light grid, the raw curve and an exponentially smoothed curve.
// Non-finite values are skipped. Written atomically; throws std::runtime_error on failure.
void write_line_plot_png(const std::string& path, const std::vector<double>& ys, int width = 800,
                         int height = 400);

}  // namespace engine::app
