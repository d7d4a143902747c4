// spec/geometry.py: where the letterboxed input sits in the image, and upstream's upsampling chain (bilinear
// to input_size², crop to (h', w'), bilinear to (H, W)) as one composed weight matrix per axis.
#pragma once

#include <vector>

namespace xsam {

struct Geometry {
  int image_h = 0, image_w = 0;    // original image
  int scaled_h = 0, scaled_w = 0;  // the image inside the letterboxed input
  int input_size = 0;              // square decoder input side
};

class Upsampler {
 public:
  Upsampler(int mask_h, int mask_w, const Geometry& g);
  // One (mh, mw) logit map to full size; rows [row0, row1) of the output only (row1 < 0: all rows).
  void Apply(const float* map, float* out, int row0 = 0, int row1 = -1) const;
  int height() const { return h_; }
  int width() const { return w_; }

 private:
  int mh_, mw_, h_, w_;
  std::vector<float> ry_;  // (H, mh)
  std::vector<float> rx_;  // (W, mw)
};

}  // namespace xsam
