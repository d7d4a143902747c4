// spec/postprocess.py + spec/masks.py: decoder logits -> masks at the original size, per task (referring /
// reasoning / GCG best query per phrase, panoptic merge, instance and visual-grounded top-k, interactive box
// IoU pick, semantic argmax), with the Python thresholds' defaults.
#pragma once

#include <string>
#include <vector>

#include "geometry.hpp"
#include "preprocess.hpp"
#include "types.hpp"

namespace xsam {

struct Logits {
  int queries = 0, columns = 0;  // class logits (Q, C + 1), background last
  std::vector<float> cls;
  int mask_h = 0, mask_w = 0;    // mask logits (Q, mh, mw)
  std::vector<float> masks;
};

// finish(): the result of one request from its decoder outputs. `logits` null: a text-only result.
Status Finish(Task task, const Logits* logits, const Geometry& g, const std::vector<std::string>& labels,
              const std::vector<BoxF>& prompt_boxes, bool has_text, const std::string& text, Result* out);

}  // namespace xsam
