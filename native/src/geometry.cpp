#include "geometry.hpp"

#include <algorithm>
#include <cstdint>

namespace xsam {
namespace {

struct Taps {
  std::vector<int64_t> i0, i1;
  std::vector<float> l0, l1;
};

// _axis_taps: torch's bilinear (align_corners=False) source indices and float32 weights along one axis.
Taps AxisTaps(int in_size, int out_size) {
  Taps t;
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  for (int o = 0; o < out_size; ++o) {
    float center = static_cast<float>(o) + 0.5f;
    // float32 × float32 is exact in double, so this rounds once, like torch's fused multiply-add
    float src = static_cast<float>(static_cast<double>(scale) * static_cast<double>(center) - 0.5);
    src = std::max(src, 0.0f);
    int64_t i0 = std::min<int64_t>(static_cast<int64_t>(src), in_size - 1);
    int64_t i1 = std::min<int64_t>(i0 + 1, in_size - 1);
    float l1 = std::clamp(src - static_cast<float>(i0), 0.0f, 1.0f);
    t.i0.push_back(i0);
    t.i1.push_back(i1);
    t.l0.push_back(1.0f - l1);
    t.l1.push_back(l1);
  }
  return t;
}

// _chain_matrix: (out, m) float32 = resize(scaled -> out) ∘ crop(scaled) ∘ resize(m -> input_size).
std::vector<float> ChainMatrix(int m, int scaled, int out, int input_size) {
  Taps up = AxisTaps(m, input_size);
  std::vector<double> upm(static_cast<size_t>(scaled) * m, 0.0);  // (scaled, m), float64 as interp_matrix
  for (int r = 0; r < scaled; ++r) {
    upm[static_cast<size_t>(r) * m + up.i0[r]] += up.l0[r];
    upm[static_cast<size_t>(r) * m + up.i1[r]] += up.l1[r];
  }
  Taps down = AxisTaps(scaled, out);
  std::vector<float> mat(static_cast<size_t>(out) * m);
  for (int o = 0; o < out; ++o) {
    const double a = down.l0[o], b = down.l1[o];
    for (int j = 0; j < m; ++j) {
      double v = a * upm[static_cast<size_t>(down.i0[o]) * m + j] + b * upm[static_cast<size_t>(down.i1[o]) * m + j];
      mat[static_cast<size_t>(o) * m + j] = static_cast<float>(v);
    }
  }
  return mat;
}

}  // namespace

Upsampler::Upsampler(int mask_h, int mask_w, const Geometry& g)
    : mh_(mask_h), mw_(mask_w), h_(g.image_h), w_(g.image_w) {
  ry_ = ChainMatrix(mask_h, g.scaled_h, g.image_h, g.input_size);
  rx_ = ChainMatrix(mask_w, g.scaled_w, g.image_w, g.input_size);
}

void Upsampler::Apply(const float* map, float* out, int row0, int row1) const {
  if (row1 < 0) row1 = h_;
  std::vector<double> t(static_cast<size_t>(mw_));
  for (int y = row0; y < row1; ++y) {
    // t = ry[y] @ map  (mw,)
    std::fill(t.begin(), t.end(), 0.0);
    const float* ry = &ry_[static_cast<size_t>(y) * mh_];
    for (int i = 0; i < mh_; ++i) {
      if (ry[i] == 0.0f) continue;
      const float* row = map + static_cast<size_t>(i) * mw_;
      for (int j = 0; j < mw_; ++j) t[j] += static_cast<double>(ry[i]) * row[j];
    }
    // numpy keeps t in float32 before the second product
    float* dst = out + static_cast<size_t>(y - row0) * w_;
    for (int x = 0; x < w_; ++x) {
      const float* rx = &rx_[static_cast<size_t>(x) * mw_];
      double acc = 0.0;
      for (int j = 0; j < mw_; ++j) acc += static_cast<double>(rx[j]) * static_cast<float>(t[j]);
      dst[x] = static_cast<float>(acc);
    }
  }
}

}  // namespace xsam
