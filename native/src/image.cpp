#include "image.hpp"

#include <algorithm>
#include <cmath>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO_OVERRIDE
#include "stb_image.h"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb_image_write.h"

namespace xsam {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Resample.c PRECISION_BITS for 8-bit images

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // (xmin, count) per output sample
  std::vector<int32_t> k;   // ksize fixed-point weights per output sample
};

// Resample.c precompute_coeffs + normalize_coeffs_8bpc with the bilinear (triangle, support 1) filter.
Coeffs PrecomputeBilinear(int in_size, int out_size) {
  Coeffs c;
  double scale = static_cast<double>(in_size) / out_size;
  double filterscale = std::max(scale, 1.0);
  double support = 1.0 * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<size_t>(out_size) * 2);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(static_cast<size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    double center = (xx + 0.5) * scale;
    double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      double t = std::fabs((x + xmin - center + 0.5) * ss);
      w[x] = t < 1.0 ? 1.0 - t : 0.0;
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      double v = ww != 0.0 ? w[x] / ww : w[x];
      c.k[static_cast<size_t>(xx) * c.ksize + x] =
          static_cast<int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[2 * xx] = xmin;
    c.bounds[2 * xx + 1] = xmax;
  }
  return c;
}

inline uint8_t Clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits) * 255) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

}  // namespace

Image ResizeBilinearPil(const Image& in, int out_w, int out_h) {
  const int ch = in.channels;
  Coeffs horiz = PrecomputeBilinear(in.width, out_w);
  Coeffs vert = PrecomputeBilinear(in.height, out_h);
  // Pillow skips a pass whose size does not change
  Image tmp = in;
  if (out_w != in.width) {
    // only the source rows the vertical pass reads are resampled horizontally (ybox_first .. ybox_last)
    int first = vert.bounds[0];
    int last = vert.bounds[2 * (out_h - 1)] + vert.bounds[2 * (out_h - 1) + 1];
    if (out_h == in.height) {
      first = 0;
      last = in.height;
    }
    tmp.width = out_w;
    tmp.height = last - first;
    tmp.data.assign(static_cast<size_t>(tmp.height) * out_w * ch, 0);
    for (int y = 0; y < tmp.height; ++y) {
      const uint8_t* src = in.row(y + first);
      uint8_t* dst = tmp.row(y);
      for (int xx = 0; xx < out_w; ++xx) {
        int xmin = horiz.bounds[2 * xx], n = horiz.bounds[2 * xx + 1];
        const int32_t* k = &horiz.k[static_cast<size_t>(xx) * horiz.ksize];
        for (int c = 0; c < ch; ++c) {
          int32_t ss = 1 << (kPrecisionBits - 1);
          for (int x = 0; x < n; ++x) ss += src[(x + xmin) * ch + c] * k[x];
          dst[xx * ch + c] = Clip8(ss);
        }
      }
    }
    if (out_h != in.height) {
      for (int i = 0; i < out_h; ++i) vert.bounds[2 * i] -= first;
    }
  }
  if (out_h == in.height) return tmp;
  Image out;
  out.width = tmp.width;
  out.height = out_h;
  out.channels = ch;
  out.data.assign(static_cast<size_t>(out_h) * out.width * ch, 0);
  for (int yy = 0; yy < out_h; ++yy) {
    int ymin = vert.bounds[2 * yy], n = vert.bounds[2 * yy + 1];
    const int32_t* k = &vert.k[static_cast<size_t>(yy) * vert.ksize];
    uint8_t* dst = out.row(yy);
    for (int x = 0; x < out.width * ch; ++x) {
      int32_t ss = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < n; ++y) ss += tmp.row(y + ymin)[x] * k[y];
      dst[x] = Clip8(ss);
    }
  }
  return out;
}

Image ResizeNearestPil(const Image& in, int out_w, int out_h) {
  // Geometry.c ImagingScaleAffine: the source coordinate is accumulated in double, then truncated
  const double ax = static_cast<double>(in.width) / out_w, ay = static_cast<double>(in.height) / out_h;
  std::vector<int> xin(static_cast<size_t>(out_w));
  double xo = ax * 0.5;
  for (int x = 0; x < out_w; ++x, xo += ax) xin[x] = std::min(static_cast<int>(xo), in.width - 1);
  Image out;
  out.width = out_w;
  out.height = out_h;
  out.channels = in.channels;
  out.data.resize(static_cast<size_t>(out_w) * out_h * in.channels);
  double yo = ay * 0.5;
  for (int y = 0; y < out_h; ++y, yo += ay) {
    const uint8_t* src = in.row(std::min(static_cast<int>(yo), in.height - 1));
    uint8_t* dst = out.row(y);
    for (int x = 0; x < out_w; ++x) {
      for (int c = 0; c < in.channels; ++c) dst[x * in.channels + c] = src[xin[x] * in.channels + c];
    }
  }
  return out;
}

Status LoadImage(const std::string& path, Image* out) {
  int w = 0, h = 0, n = 0;
  bool is16 = stbi_is_16_bit(path.c_str()) != 0;
  std::vector<int> px;  // 0..255 after bit-depth conversion
  if (is16) {
    stbi_us* data = stbi_load_16(path.c_str(), &w, &h, &n, 0);
    if (!data) return InvalidArgument("cannot read image " + path + ": " + stbi_failure_reason());
    px.resize(static_cast<size_t>(w) * h * n);
    for (size_t i = 0; i < px.size(); ++i) px[i] = (static_cast<int>(data[i]) * 255 + 32767) / 65535;
    stbi_image_free(data);
  } else {
    stbi_uc* data = stbi_load(path.c_str(), &w, &h, &n, 0);
    if (!data) return InvalidArgument("cannot read image " + path + ": " + stbi_failure_reason());
    px.assign(data, data + static_cast<size_t>(w) * h * n);
    stbi_image_free(data);
  }
  if (w < 2 || h < 2) return InvalidArgument("image " + path + " is smaller than 2x2 pixels");
  out->width = w;
  out->height = h;
  out->channels = 3;
  out->data.resize(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < static_cast<size_t>(w) * h; ++i) {
    const int* p = &px[i * n];
    int rgb[3] = {p[0], n >= 3 ? p[1] : p[0], n >= 3 ? p[2] : p[0]};
    int alpha = (n == 2 || n == 4) ? p[n - 1] : 255;
    for (int c = 0; c < 3; ++c) {
      out->data[i * 3 + c] = static_cast<uint8_t>(alpha == 255 ? rgb[c] : (rgb[c] * alpha + 127) / 255);
    }
  }
  return Status::Ok();
}

Status LoadMask(const std::string& path, std::vector<uint8_t>* mask, int* height, int* width) {
  int w = 0, h = 0, n = 0;
  stbi_uc* data = stbi_load(path.c_str(), &w, &h, &n, 1);
  if (!data) return InvalidArgument("cannot read mask " + path + ": " + stbi_failure_reason());
  mask->resize(static_cast<size_t>(w) * h);
  for (size_t i = 0; i < mask->size(); ++i) (*mask)[i] = data[i] > 127;
  stbi_image_free(data);
  *height = h;
  *width = w;
  return Status::Ok();
}

Status WritePng(const std::string& path, const Image& image) {
  int ok = stbi_write_png(path.c_str(), image.width, image.height, image.channels, image.data.data(),
                          image.width * image.channels);
  return ok ? Status::Ok() : IoError("cannot write " + path);
}

}  // namespace xsam
