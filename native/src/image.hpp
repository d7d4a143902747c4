// 8-bit images: file decoding (stb), PNG writing, and Pillow's exact resizes, which the pre-processing spec
// names (PIL bilinear for pixels, PIL nearest for prompt masks) so pixels match the Python runtime bit for bit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "status.hpp"

namespace xsam {

struct Image {
  int height = 0, width = 0, channels = 3;
  std::vector<uint8_t> data;  // row-major, interleaved channels

  uint8_t* row(int y) { return data.data() + static_cast<size_t>(y) * width * channels; }
  const uint8_t* row(int y) const { return data.data() + static_cast<size_t>(y) * width * channels; }
};

// An image file as (H, W, 3) RGB, converted as spec/image_io.py load_image does for PNG: gray replicated,
// alpha composited on black (rgb × a / 255, rounded), 16-bit scaled by 65535 → 255 (rounded). JPEG decoding
// uses stb's IDCT, which can differ from libjpeg's by a grey level; EXIF orientation is not applied.
Status LoadImage(const std::string& path, Image* out);
// A single-channel mask file (golden MaskPrompt PNGs): pixel > 127.
Status LoadMask(const std::string& path, std::vector<uint8_t>* mask, int* height, int* width);
Status WritePng(const std::string& path, const Image& image);

// Pillow's Image.resize(size, BILINEAR) for 8-bit images: a separable convolution with a triangle filter
// stretched by the downscale factor (antialiasing), coefficients in 22-bit fixed point, horizontal pass first
// (libImaging/Resample.c).
Image ResizeBilinearPil(const Image& in, int out_w, int out_h);
// Pillow's Image.resize(size, NEAREST): source index floor(scale·(x + 0.5)), accumulated as Pillow does.
Image ResizeNearestPil(const Image& in, int out_w, int out_h);

}  // namespace xsam
