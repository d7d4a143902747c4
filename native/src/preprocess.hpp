// spec/preprocess.py with the manifest's PreprocessSpec: letterbox (SAM branch), global pixels (SigLIP
// branch), visual-prompt rasters and their letterboxed masks, prompt boxes. Same arithmetic as the numpy
// code (rescale in double then float32, normalise in float32), so tensors match bit for bit.
#pragma once

#include <array>
#include <vector>

#include "bundle.hpp"
#include "image.hpp"
#include "types.hpp"

namespace xsam {

using BoxF = std::array<double, 4>;  // x0, y0, x1, y1 (x1 / y1 exclusive)

std::pair<int, int> ScaledSize(int h, int w, int size);  // (h', w'): longest side -> size, HF rounding

// (3, S, S) float32, zero outside the top-left (h', w') block; `scaled` receives (h', w').
std::vector<float> Letterbox(const Image& image, const PreprocessSpec& spec, std::pair<int, int>* scaled);
// (3, G, G) float32.
std::vector<float> GlobalPixels(const Image& image, const PreprocessSpec& spec);

// (H, W) 0/1 raster of a prompt (rasterize_prompt).
std::vector<uint8_t> RasterizePrompt(const Prompt& prompt, int h, int w, const PreprocessSpec& spec);
// (S, S) float32 0/1: the raster resized like the image (nearest) and zero-padded (letterbox_mask).
std::vector<float> LetterboxMask(const std::vector<uint8_t>& mask, int h, int w, int size);
BoxF MaskBox(const uint8_t* mask, int h, int w);

}  // namespace xsam
