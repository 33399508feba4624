// PNG output for the apps: grids of grayscale sample images (bare or labelled) and raw RGB images.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace engine::app {

// Optional labels of a sample grid: a caption line above it and one label per row, left of it.
struct GridLabels {
  std::string caption;                  // e.g. "15 euler steps, CFG 3, seed 0, EMA weights"
  std::vector<std::string> row_labels;  // e.g. "class 3"; missing entries are left blank
  bool empty() const { return caption.empty() && row_labels.empty(); }
};

// `images` holds n images of h x w pixels in [-1, 1] (clipped; NaN is drawn black). The grid has
// min(ncols, n) columns and ceil(n / ncols) rows, with `pad` black pixels around every cell. With empty
// `labels` (a bare grid) the PNG is grayscale and exactly the grid; otherwise it is RGB with a white caption
// strip above and a label column left of the grid (text drawn with PLplot), the cells' pixels unchanged.
// In a build without PLplot (plots_available() false) a labelled grid is written bare, with the caption
// and the row labels in a text file `path + ".txt"`.
// Written atomically; throws std::runtime_error (with the OS reason) on failure.
void write_grid_png(const std::string& path, const float* images, int64_t n, int64_t h, int64_t w,
                    int64_t ncols, int pad = 2, const GridLabels& labels = {});

// Encodes width * height * 3 RGB bytes as PNG and writes them atomically; throws std::runtime_error.
void write_rgb_png(const std::string& path, const std::vector<uint8_t>& rgb, int width, int height);

}  // namespace engine::app
