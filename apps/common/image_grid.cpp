// Rasterises image grids (labels drawn with PLplot, see plot.h) and encodes PNGs with stb_image_write.
#include "apps/common/image_grid.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "apps/common/plot.h"  // render_text_rgb
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

}  // namespace

void write_grid_png(const std::string& path, const float* images, int64_t n, int64_t h, int64_t w,
                    int64_t ncols, int pad, const GridLabels& labels) {
  if (n <= 0 || h <= 0 || w <= 0 || ncols <= 0 || pad < 0 || !images)
    throw std::runtime_error("write_grid_png '" + path + "': invalid arguments");
  const int64_t cols = std::min(ncols, n);
  const int64_t rows = (n + cols - 1) / cols;
  const int64_t W = pad + cols * (w + pad), H = pad + rows * (h + pad);
  if (W > 8000 || H > 8000) throw std::runtime_error("write_grid_png '" + path + "': image too large");
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
  if (labels.empty()) {
    write_png(path, pix, static_cast<int>(W), static_cast<int>(H), 1);
    return;
  }
  if (!plots_available()) {  // no PLplot: the bare grid plus the labels in a text sidecar
    write_png(path, pix, static_cast<int>(W), static_cast<int>(H), 1);
    std::string text = labels.caption + "\n";
    for (size_t r = 0; r < labels.row_labels.size(); ++r)
      text += "row " + std::to_string(r + 1) + ": " + labels.row_labels[r] + "\n";
    engine::st::write_bytes_atomic(path + ".txt", reinterpret_cast<const uint8_t*>(text.data()), text.size());
    return;
  }
  // Text size follows the cell height (14 px for MNIST's 28); the label column fits the longest label.
  const double text_px = std::clamp(0.5 * double(h + pad), 10.0, 24.0);
  size_t longest = 0;
  for (const std::string& l : labels.row_labels) longest = std::max(longest, l.size());
  const int64_t label_w = longest ? static_cast<int64_t>(std::ceil(0.62 * text_px * longest + 12)) : 0;
  const int64_t caption_h = labels.caption.empty() ? 0 : static_cast<int64_t>(std::ceil(2.0 * text_px));
  const int64_t caption_w = static_cast<int64_t>(std::ceil(0.62 * text_px * labels.caption.size() + 12));
  const int64_t CW = std::max<int64_t>({64, label_w + W, caption_w}),
                CH = std::max<int64_t>(64, caption_h + H);
  std::vector<TextItem> items;
  if (!labels.caption.empty()) items.push_back({6, 0.5 * caption_h, labels.caption});
  for (int64_t r = 0; r < rows && r < static_cast<int64_t>(labels.row_labels.size()); ++r)
    items.push_back({6, caption_h + pad + r * (h + pad) + 0.5 * h, labels.row_labels[r]});
  std::vector<uint8_t> rgb = render_text_rgb(static_cast<int>(CW), static_cast<int>(CH), items, text_px);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      uint8_t* p = &rgb[((caption_h + y) * CW + label_w + x) * 3];
      p[0] = p[1] = p[2] = pix[y * W + x];
    }
  write_png(path, rgb, static_cast<int>(CW), static_cast<int>(CH), 3);
}

void write_rgb_png(const std::string& path, const std::vector<uint8_t>& rgb, int width, int height) {
  if (width <= 0 || height <= 0 || rgb.size() != static_cast<size_t>(width) * height * 3)
    throw std::runtime_error("write_rgb_png '" + path + "': invalid arguments");
  write_png(path, rgb, width, height, 3);
}

}  // namespace engine::app
