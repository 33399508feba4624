// Rasterises image grids and loss plots and encodes them as PNG with stb_image_write.
#include "apps/common/image_grid.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/safetensors.h"  // write_bytes_atomic

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#if __has_include(<stb/stb_image_write.h>)
#include <stb/stb_image_write.h>
#else
#include <stb_image_write.h>
#endif
#pragma GCC diagnostic pop

namespace engine::app {
namespace {

void append_bytes(void* ctx, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(ctx);
  const auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

void write_png(const std::string& path, const std::vector<uint8_t>& pixels, int width, int height, int comp) {
  std::vector<uint8_t> png;
  if (!stbi_write_png_to_func(append_bytes, &png, width, height, comp, pixels.data(), width * comp) ||
      png.empty())
    throw std::runtime_error("cannot encode PNG '" + path + "'");
  try {
    engine::st::write_bytes_atomic(path, png.data(), png.size());
  } catch (const std::exception& e) {
    throw std::runtime_error(e.what());
  }
}

struct Canvas {
  int w, h;
  std::vector<uint8_t> rgb;
  Canvas(int w_, int h_) : w(w_), h(h_), rgb(static_cast<size_t>(w_) * h_ * 3, 255) {}
  void set(int x, int y, const uint8_t c[3]) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    uint8_t* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
    p[0] = c[0];
    p[1] = c[1];
    p[2] = c[2];
  }
  // Bresenham line, `thick` pixels wide (vertically and horizontally widened).
  void line(int x0, int y0, int x1, int y1, const uint8_t c[3], int thick = 1) {
    int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    int dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
      for (int a = 0; a < thick; ++a)
        for (int b = 0; b < thick; ++b) set(x0 + a - thick / 2, y0 + b - thick / 2, c);
      if (x0 == x1 && y0 == y1) break;
      int e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }
};

}  // namespace

void write_grid_png(const std::string& path, const float* images, int64_t n, int64_t h, int64_t w,
                    int64_t ncols, int pad) {
  if (n <= 0 || h <= 0 || w <= 0 || ncols <= 0 || pad < 0 || !images)
    throw std::runtime_error("write_grid_png '" + path + "': invalid arguments");
  const int64_t cols = std::min(ncols, n);
  const int64_t rows = (n + cols - 1) / cols;
  const int64_t W = pad + cols * (w + pad), H = pad + rows * (h + pad);
  if (W > 65535 || H > 65535) throw std::runtime_error("write_grid_png '" + path + "': image too large");
  std::vector<uint8_t> pix(static_cast<size_t>(W * H), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t x0 = pad + (i % cols) * (w + pad), y0 = pad + (i / cols) * (h + pad);
    const float* img = images + i * h * w;
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t x = 0; x < w; ++x) {
        float v = img[y * w + x];
        v = std::isnan(v) ? -1.0f : std::clamp(v, -1.0f, 1.0f);
        pix[(y0 + y) * W + x0 + x] = static_cast<uint8_t>(std::lround((v + 1.0f) * 127.5f));
      }
    }
  }
  write_png(path, pix, static_cast<int>(W), static_cast<int>(H), 1);
}

void write_line_plot_png(const std::string& path, const std::vector<double>& ys, int width, int height) {
  if (width < 64 || height < 64 || width > 16384 || height > 16384)
    throw std::runtime_error("write_line_plot_png '" + path + "': invalid size");
  Canvas cv(width, height);
  const int left = 40, right = width - 15, top = 15, bottom = height - 30;
  const uint8_t black[3] = {0, 0, 0}, grid[3] = {225, 225, 225}, raw[3] = {160, 190, 235},
                smooth[3] = {20, 60, 170};

  double lo = INFINITY, hi = -INFINITY;
  for (double y : ys)
    if (std::isfinite(y)) lo = std::min(lo, y), hi = std::max(hi, y);
  if (!(lo <= hi)) lo = 0, hi = 1;
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {
    double d = std::max(std::abs(hi) * 0.1, 1e-6);
    lo -= d, hi += d;
  }
  const double margin = (hi - lo) * 0.05;
  lo -= margin, hi += margin;

  for (int k = 0; k <= 5; ++k) {
    int y = bottom - (bottom - top) * k / 5;
    cv.line(left, y, right, y, grid);
  }
  for (int k = 1; k <= 10; ++k) {
    int x = left + (right - left) * k / 10;
    cv.line(x, top, x, bottom, grid);
  }

  const size_t n = ys.size();
  auto px = [&](size_t i) {
    return n <= 1 ? (left + right) / 2
                  : left + static_cast<int>(std::lround(double(i) * (right - left) / (n - 1)));
  };
  auto py = [&](double v) {
    return bottom - static_cast<int>(std::lround((v - lo) / (hi - lo) * (bottom - top)));
  };
  auto draw = [&](const std::vector<double>& vs, const uint8_t c[3], int thick) {
    bool have = false;
    int lx = 0, ly = 0;
    for (size_t i = 0; i < vs.size(); ++i) {
      if (!std::isfinite(vs[i])) continue;
      int x = px(i), y = py(vs[i]);
      if (have)
        cv.line(lx, ly, x, y, c, thick);
      else
        cv.line(x, y, x, y, c, thick);
      lx = x, ly = y, have = true;
    }
  };
  draw(ys, raw, 1);
  if (n >= 4) {
    // Debiased EMA with a span of ~2% of the curve.
    const double alpha = std::min(1.0, 2.0 / (std::max<double>(1.0, n / 50.0) + 1.0));
    std::vector<double> sm(n, NAN);
    double acc = 0, wsum = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!std::isfinite(ys[i])) continue;
      acc = (1 - alpha) * acc + alpha * ys[i];
      wsum = (1 - alpha) * wsum + alpha;
      sm[i] = acc / wsum;
    }
    draw(sm, smooth, 2);
  }
  cv.line(left, top, left, bottom, black, 2);
  cv.line(left, bottom, right, bottom, black, 2);
  write_png(path, cv.rgb, width, height, 3);
}

}  // namespace engine::app
