#include "overlay_math.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace xsam_apple {

Fit FitCentered(int image_width, int image_height, double view_width, double view_height) {
  Fit fit;
  if (image_width <= 0 || image_height <= 0 || view_width <= 0 || view_height <= 0) return fit;
  fit.image_width = image_width;
  fit.image_height = image_height;
  fit.scale = std::min(view_width / image_width, view_height / image_height);
  fit.offset_x = (view_width - image_width * fit.scale) / 2;
  fit.offset_y = (view_height - image_height * fit.scale) / 2;
  return fit;
}

bool ViewToImage(const Fit& fit, double vx, double vy, double* x, double* y) {
  if (fit.scale <= 0) return false;
  double ix = (vx - fit.offset_x) / fit.scale;
  double iy = (vy - fit.offset_y) / fit.scale;
  if (ix < 0 || iy < 0 || ix > fit.image_width || iy > fit.image_height) return false;
  *x = ix;
  *y = iy;
  return true;
}

void ViewToImageClamped(const Fit& fit, double vx, double vy, double* x, double* y) {
  double s = fit.scale > 0 ? fit.scale : 1;
  *x = std::clamp((vx - fit.offset_x) / s, 0.0, static_cast<double>(fit.image_width));
  *y = std::clamp((vy - fit.offset_y) / s, 0.0, static_cast<double>(fit.image_height));
}

void ImageToView(const Fit& fit, double x, double y, double* vx, double* vy) {
  *vx = x * fit.scale + fit.offset_x;
  *vy = y * fit.scale + fit.offset_y;
}

uint32_t PaletteRgb(size_t i) {
  double hue = std::fmod(static_cast<double>(i) * 0.618033988749895, 1.0);
  double value = i % 2 == 0 ? 1.0 : 0.75;
  uint32_t rgb = 0;
  for (double offset : {5.0, 3.0, 1.0}) {
    double k = std::fmod(hue * 6 + offset, 6.0);
    double v = value * (1 - std::clamp(std::min(k, 4 - k), 0.0, 1.0));
    rgb = (rgb << 8) | static_cast<uint32_t>(std::nearbyint(v * 255));
  }
  return rgb;
}

std::vector<uint8_t> MaskLayerRgba(const std::vector<const uint8_t*>& masks, int height, int width, float alpha) {
  size_t n = static_cast<size_t>(std::max(height, 0)) * static_cast<size_t>(std::max(width, 0));
  std::vector<uint8_t> layer(n * 4, 0);
  int a = static_cast<int>(std::lround(std::clamp(alpha, 0.0f, 1.0f) * 255));
  for (size_t m = 0; m < masks.size(); ++m) {
    if (!masks[m]) continue;
    uint32_t rgb = PaletteRgb(m);
    uint8_t px[4];
    for (int c = 0; c < 3; ++c) {
      int channel = (rgb >> (16 - 8 * c)) & 0xFF;
      px[c] = static_cast<uint8_t>((channel * a + 127) / 255);  // premultiplied, rounded
    }
    px[3] = static_cast<uint8_t>(a);
    for (size_t i = 0; i < n; ++i) {
      if (masks[m][i]) std::copy(px, px + 4, layer.begin() + static_cast<std::ptrdiff_t>(i * 4));
    }
  }
  return layer;
}

bool BoundingBox(const uint8_t* mask, int height, int width, std::array<int, 4>* box) {
  int x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      if (!mask[static_cast<size_t>(y) * width + x]) continue;
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  if (x1 < 0) return false;
  *box = {x0, y0, x1 + 1, y1 + 1};
  return true;
}

std::array<int, 2> LabelCorner(const std::array<int, 4>& box, int box_width, int box_height, int image_width,
                               int image_height) {
  int x = std::min(std::max(box[0], 0), std::max(image_width - box_width, 0));
  int y = std::min(std::max(box[1] - box_height, 0), std::max(image_height - box_height, 0));
  return {x, y};
}

std::string Caption(const std::string& label, float score) {
  char digits[32];
  std::snprintf(digits, sizeof(digits), "%.2f", static_cast<double>(score));
  return label + " \xc2\xb7 " + digits;
}

uint32_t InkOn(uint32_t rgb) {
  double luma = 0.299 * ((rgb >> 16) & 0xFF) + 0.587 * ((rgb >> 8) & 0xFF) + 0.114 * (rgb & 0xFF);
  return luma > 140 ? 0x000000u : 0xFFFFFFu;
}

}  // namespace xsam_apple
