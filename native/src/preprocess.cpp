#include "preprocess.hpp"

#include <algorithm>
#include <cmath>

namespace xsam {
namespace {

constexpr int kReferenceSide = 640;  // spec/preprocess.py REFERENCE_SIDE: where the prompt radii were tuned

// _normalize: (h, w, 3) uint8 -> channel-major float32 into `out` (row stride `stride`).
void Normalize(const Image& img, const double mean[3], const double stdv[3], float* out, int stride) {
  const size_t plane = static_cast<size_t>(stride) * stride;
  for (int c = 0; c < 3; ++c) {
    const float m = static_cast<float>(mean[c]), s = static_cast<float>(stdv[c]);
    for (int y = 0; y < img.height; ++y) {
      const uint8_t* row = img.row(y);
      float* dst = out + c * plane + static_cast<size_t>(y) * stride;
      for (int x = 0; x < img.width; ++x) {
        float v = static_cast<float>(row[x * 3 + c] * (1.0 / 255));
        dst[x] = (v - m) / s;
      }
    }
  }
}

int ScaledRadius(int radius, int h, int w) {
  // max(1, round(radius * max(H, W) / 640)); Python's round is half-to-even, as nearbyint
  return std::max(1, static_cast<int>(std::nearbyint(static_cast<double>(radius) * std::max(h, w) / kReferenceSide)));
}

// _draw_stroke: every pixel whose centre lies within `radius` of the polyline.
void DrawStroke(std::vector<uint8_t>* out, int h, int w, const std::vector<std::pair<double, double>>& points,
                int radius) {
  std::vector<std::pair<std::pair<double, double>, std::pair<double, double>>> segments;
  for (size_t i = 0; i + 1 < points.size(); ++i) segments.push_back({points[i], points[i + 1]});
  if (segments.empty()) segments.push_back({points[0], points[0]});
  const double r = radius;
  for (const auto& seg : segments) {
    const double px = seg.first.first, py = seg.first.second, qx = seg.second.first, qy = seg.second.second;
    int y0 = std::max(0, static_cast<int>(std::floor(std::min(py, qy) - r)));
    int y1 = std::min(h, static_cast<int>(std::ceil(std::max(py, qy) + r)) + 1);
    int x0 = std::max(0, static_cast<int>(std::floor(std::min(px, qx) - r)));
    int x1 = std::min(w, static_cast<int>(std::ceil(std::max(px, qx) + r)) + 1);
    const double dx = qx - px, dy = qy - py, length_sq = dx * dx + dy * dy;
    for (int y = y0; y < y1; ++y) {
      for (int x = x0; x < x1; ++x) {
        double t = 0.0;
        if (length_sq != 0) t = std::clamp(((x - px) * dx + (y - py) * dy) / length_sq, 0.0, 1.0);
        double ex = x - (px + t * dx), ey = y - (py + t * dy);
        if (ex * ex + ey * ey <= r * r) (*out)[static_cast<size_t>(y) * w + x] = 1;
      }
    }
  }
}

int Round(double v) { return static_cast<int>(std::floor(v + 0.5)); }

}  // namespace

std::pair<int, int> ScaledSize(int h, int w, int size) {
  double scale = size * 1.0 / std::max(h, w);
  return {static_cast<int>(h * scale + 0.5), static_cast<int>(w * scale + 0.5)};
}

std::vector<float> Letterbox(const Image& image, const PreprocessSpec& spec, std::pair<int, int>* scaled) {
  const int size = spec.seg_size;
  *scaled = ScaledSize(image.height, image.width, size);
  Image resized = ResizeBilinearPil(image, scaled->second, scaled->first);
  std::vector<float> out(static_cast<size_t>(3) * size * size, 0.0f);
  Normalize(resized, spec.pixel_mean, spec.pixel_std, out.data(), size);
  return out;
}

std::vector<float> GlobalPixels(const Image& image, const PreprocessSpec& spec) {
  const int size = spec.global_size;
  const Image* src = &image;
  Image square;
  if (spec.pad_to_square && image.height != image.width) {
    // expand_to_square: centred on a canvas of the longest side filled with pad_fill
    const int side = std::max(image.height, image.width);
    square.height = square.width = side;
    square.data.resize(static_cast<size_t>(side) * side * 3);
    for (size_t i = 0; i < square.data.size(); ++i) square.data[i] = static_cast<uint8_t>(spec.pad_fill[i % 3]);
    const int top = (side - image.height) / 2, left = (side - image.width) / 2;
    for (int y = 0; y < image.height; ++y) {
      std::copy(image.row(y), image.row(y) + image.width * 3, square.row(y + top) + left * 3);
    }
    src = &square;
  }
  Image resized = ResizeBilinearPil(*src, size, size);
  std::vector<float> out(static_cast<size_t>(3) * size * size);
  Normalize(resized, spec.global_mean, spec.global_std, out.data(), size);
  return out;
}

std::vector<uint8_t> RasterizePrompt(const Prompt& p, int h, int w, const PreprocessSpec& spec) {
  std::vector<uint8_t> out(static_cast<size_t>(h) * w, 0);
  switch (p.kind) {
    case Prompt::Kind::kPoint:
      DrawStroke(&out, h, w, p.points, ScaledRadius(spec.point_radius, h, w));
      break;
    case Prompt::Kind::kScribble:
      DrawStroke(&out, h, w, p.points, ScaledRadius(spec.scribble_radius, h, w));
      break;
    case Prompt::Kind::kBox: {
      int x0 = std::min(std::max(Round(p.box[0]), 0), w - 1), x1 = std::min(std::max(Round(p.box[2]), 0), w);
      int y0 = std::min(std::max(Round(p.box[1]), 0), h - 1), y1 = std::min(std::max(Round(p.box[3]), 0), h);
      for (int y = y0; y < std::max(y1, y0 + 1); ++y) {
        for (int x = x0; x < std::max(x1, x0 + 1); ++x) out[static_cast<size_t>(y) * w + x] = 1;
      }
      break;
    }
    case Prompt::Kind::kMask:
      for (size_t i = 0; i < out.size() && i < p.mask.size(); ++i) out[i] = p.mask[i] != 0;
      break;
  }
  return out;
}

std::vector<float> LetterboxMask(const std::vector<uint8_t>& mask, int h, int w, int size) {
  auto scaled = ScaledSize(h, w, size);
  Image img;
  img.height = h;
  img.width = w;
  img.channels = 1;
  img.data.resize(mask.size());
  for (size_t i = 0; i < mask.size(); ++i) img.data[i] = mask[i] ? 255 : 0;
  Image resized = ResizeNearestPil(img, scaled.second, scaled.first);
  std::vector<float> out(static_cast<size_t>(size) * size, 0.0f);
  for (int y = 0; y < scaled.first; ++y) {
    for (int x = 0; x < scaled.second; ++x) out[static_cast<size_t>(y) * size + x] = resized.row(y)[x] > 127;
  }
  return out;
}

BoxF MaskBox(const uint8_t* mask, int h, int w) {
  int x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      if (mask[static_cast<size_t>(y) * w + x]) {
        x0 = std::min(x0, x);
        x1 = std::max(x1, x);
        y0 = std::min(y0, y);
        y1 = std::max(y1, y);
      }
    }
  }
  if (x1 < 0) return {0, 0, 0, 0};
  return {static_cast<double>(x0), static_cast<double>(y0), static_cast<double>(x1 + 1), static_cast<double>(y1 + 1)};
}

}  // namespace xsam
