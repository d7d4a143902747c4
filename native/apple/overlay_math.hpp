// Drawing maths for the iOS demo (ios_demo/), plain C++ so it builds and is tested on Linux: a fit-centred
// image in a view and the maps between them, spec/image_io.py's palette, a mask layer as premultiplied RGBA
// for Core Graphics, bounding boxes and label placement as spec's annotate draws them. The Android demo's
// android_demo/core/.../Overlay.kt and ViewMapping.kt compute the same things in Kotlin.
#ifndef XSAM_APPLE_OVERLAY_MATH_HPP_
#define XSAM_APPLE_OVERLAY_MATH_HPP_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace xsam_apple {

// Where an image lands when scaled to fit a view and centred (SwiftUI's scaledToFit).
struct Fit {
  int image_width = 0;
  int image_height = 0;
  double scale = 0;  // view points per image pixel
  double offset_x = 0;
  double offset_y = 0;
};

Fit FitCentered(int image_width, int image_height, double view_width, double view_height);
// The image point (continuous pixels) under a view point; false on the letterbox bars.
bool ViewToImage(const Fit& fit, double vx, double vy, double* x, double* y);
// The same, moved to the nearest image edge when off the image (drags may leave it).
void ViewToImageClamped(const Fit& fit, double vx, double vy, double* x, double* y);
void ImageToView(const Fit& fit, double x, double y, double* vx, double* vy);

// Colour i of spec's palette(n) as 0xRRGGBB (golden-ratio hue steps, value alternating 1 / 0.75).
uint32_t PaletteRgb(size_t i);

// height * width * 4 bytes, premultiplied RGBA (kCGImageAlphaPremultipliedLast): mask m in PaletteRgb(m) at
// alpha, later masks on top, transparent elsewhere. Each mask holds height * width bytes, nonzero inside.
std::vector<uint8_t> MaskLayerRgba(const std::vector<const uint8_t*>& masks, int height, int width, float alpha);

// The smallest [x0, y0, x1, y1) box holding the mask's pixels; false for an empty mask.
bool BoundingBox(const uint8_t* mask, int height, int width, std::array<int, 4>* box);
// Top-left corner of a label box: above the mask when there is room, inside the image (spec's annotate).
std::array<int, 2> LabelCorner(const std::array<int, 4>& box, int box_width, int box_height, int image_width,
                               int image_height);
// "label · 0.98" (spec's annotate caption, UTF-8).
std::string Caption(const std::string& label, float score);
// 0x000000 (black) on light colours, 0xFFFFFF on dark ones (luma above 140).
uint32_t InkOn(uint32_t rgb);

}  // namespace xsam_apple

#endif  // XSAM_APPLE_OVERLAY_MATH_HPP_
