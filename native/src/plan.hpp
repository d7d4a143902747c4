// spec/plan.py over the bundle's graphs: prompt → region tokens → prefill with the cached image prefix →
// answer (greedy, for GCG / chat) → condition slots → segment → finish. Encode once, query many: the KV cache
// after the image prefix is read out once per image and written back before every request.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bundle.hpp"
#include "engine.hpp"
#include "geometry.hpp"
#include "postprocess.hpp"
#include "types.hpp"
#include "xsam_tokenizer.hpp"

namespace xsam {

// One request's decoder outputs before post-processing (what golden vectors store).
struct RawOutput {
  bool has_logits = false;
  Logits logits;  // class logits (Q, n + 1) over the request's n conditions and background; mask logits
  Geometry geometry;
  std::vector<std::string> labels;
  std::vector<BoxF> prompt_boxes;
  bool has_text = false;
  std::string text;
  size_t prompt_tokens = 0, num_tokens = 0;
};

class Predictor {
 public:
  Status Open(const Manifest& manifest, int max_new_tokens);

  Status SetImage(const Image& image);
  void ClearImage() { image_.reset(); }
  Status Run(const Request& request, RawOutput* out);
  Status Segment(const Request& request, Result* out);

  Engine& engine() { return engine_; }
  const Manifest& manifest() const { return manifest_; }

 private:
  struct Encoded {
    std::string key;
    std::vector<Tensor> features;  // image_tokens, region_grid, decoder inputs...
    Geometry geometry;
    std::vector<int64_t> prefix_ids;
    std::vector<float> prefix_projected;  // (P, D)
    std::vector<Tensor> prefix_state;
  };

  Status Forward(const Encoded& image, const std::vector<int64_t>& ids, const std::vector<float>* region_tokens,
                 int64_t start, std::vector<float>* projected, std::vector<float>* logits);
  Status Regions(const Encoded& image, const std::vector<std::vector<float>>& masks, std::vector<float>* tokens);
  Status Encode(const std::string& text, std::vector<int64_t>* ids) const;

  Manifest manifest_;
  Engine engine_;
  XSamTokenizer tokenizer_;
  int max_new_tokens_ = 64;
  int64_t hidden_ = 0, projected_dim_ = 0;
  std::unique_ptr<Encoded> image_;
};

}  // namespace xsam
