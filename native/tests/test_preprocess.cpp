// Pre-processing against spec/preprocess.py on images of awkward sizes: letterbox and global pixels (PIL's
// bilinear resize, normalisation), prompt rasters resized with PIL's nearest, prompt boxes. Exact equality.
#include <algorithm>
#include <cmath>

#include "bundle.hpp"
#include "check.hpp"
#include "golden.hpp"
#include "preprocess.hpp"
#include "selfcheck.hpp"

using namespace xsam;

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string dir = argv[1];
  std::string text;
  Json doc;
  CHECK_OK(ReadFile(dir + "/cases.json", &text));
  CHECK_OK(Json::Parse(text, &doc));
  Json manifest = Json::object();
  // the spec as a manifest holds it, read by the bundle code
  Manifest m;
  PreprocessSpec spec;
  {
    const Json& p = doc["preprocess"];
    spec.seg_size = static_cast<int>(p["seg_size"].as_int());
    spec.global_size = static_cast<int>(p["global_size"].as_int());
    spec.pad_to_square = p["pad_to_square"].as_bool();
    for (int c = 0; c < 3; ++c) {
      spec.pixel_mean[c] = p["pixel_mean"][c].as_double();
      spec.pixel_std[c] = p["pixel_std"][c].as_double();
      spec.global_mean[c] = p["global_mean"][c].as_double();
      spec.global_std[c] = p["global_std"][c].as_double();
      spec.pad_fill[c] = static_cast<int>(p["pad_fill"][c].as_int());
    }
    spec.point_radius = static_cast<int>(p["point_radius"].as_int());
    spec.scribble_radius = static_cast<int>(p["scribble_radius"].as_int());
  }
  std::map<std::string, NpyArray> arrays;
  CHECK_OK(LoadNpz(dir + "/arrays.npz", &arrays));
  const Json& cases = doc["cases"];
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string k = std::to_string(i);
    Request r;
    Json entry = cases[i];
    Json req = Json::object();
    req.set("task", "interactive");
    req.set("image", entry["image"]);
    req.set("prompts", entry["prompts"]);
    CHECK_OK(RequestFromJson(req, dir, &r));
    std::pair<int, int> scaled;
    double d_letter = MaxAbsDiff(Letterbox(r.image, spec, &scaled), arrays["letterbox_" + k].AsFloats());
    double d_global = MaxAbsDiff(GlobalPixels(r.image, spec), arrays["global_" + k].AsFloats());
    CHECK(scaled.first == entry["scaled_hw"][0].as_int() && scaled.second == entry["scaled_hw"][1].as_int(), "scaled size " + k);
    // Pillow 13 resamples some portrait images vertically first (its published Resample.c, which this core
    // follows, goes horizontally first): there a pixel may differ by one grey level after normalisation
    const double one_level = 1.0 / 255 / std::min({spec.pixel_std[0], spec.pixel_std[1], spec.pixel_std[2]}) + 1e-6;
    const bool portrait = r.image.height > r.image.width;
    CHECK(d_letter == 0 || (portrait && d_letter <= one_level), "letterbox " + k + " differs by " + std::to_string(d_letter));
    CHECK(d_global == 0, "global pixels " + k + " differ by " + std::to_string(d_global));
    std::vector<float> masks, boxes = arrays["prompt_boxes_" + k].AsFloats();
    for (size_t j = 0; j < r.prompts.size(); ++j) {
      std::vector<uint8_t> raster = RasterizePrompt(r.prompts[j], r.image.height, r.image.width, spec);
      std::vector<float> lm = LetterboxMask(raster, r.image.height, r.image.width, spec.seg_size);
      masks.insert(masks.end(), lm.begin(), lm.end());
      BoxF box = MaskBox(raster.data(), r.image.height, r.image.width);
      for (int c = 0; c < 4; ++c) CHECK(box[c] == boxes[j * 4 + c], "prompt box " + k + "/" + std::to_string(j));
    }
    double d_masks = MaxAbsDiff(masks, arrays["prompt_masks_" + k].AsFloats());
    CHECK(d_masks == 0, "prompt masks " + k + " differ by " + std::to_string(d_masks));
    std::printf("image %dx%d: letterbox max|d| %g, global max|d| %g, prompt masks max|d| %g\n", r.image.width,
                r.image.height, d_letter, d_global, d_masks);
  }
  CHECK(cases.size() > 0, "no preprocess cases");
  return finish("preprocess");
}
