// The native core's C++ API: open a bundle (verified), set an image, answer requests. Errors come back as
// xsam::Status values with a message, never as exceptions or aborts.
#pragma once

#include <memory>
#include <string>

#include "../../src/plan.hpp"

namespace xsam {

struct SessionOptions {
  bool verify_checksums = true;  // sha256 of every bundle file on open
  int max_new_tokens = 64;       // generation budget for GCG and chat
};

class Session {
 public:
  static Status Open(const std::string& bundle, const SessionOptions& options, std::unique_ptr<Session>* out);

  // Encode `image` and prefill the shared prefix, unless it is the image set last.
  Status SetImage(const Image& image) { return predictor_.SetImage(image); }
  void ClearImage() { predictor_.ClearImage(); }
  // Answer one request (its image is set first when it differs from the current one).
  Status Segment(const Request& request, Result* out) { return predictor_.Segment(request, out); }
  // Everything up to post-processing (decoder logits): what golden vectors compare.
  Status Run(const Request& request, RawOutput* out) { return predictor_.Run(request, out); }

  const Manifest& manifest() const { return predictor_.manifest(); }
  Engine& engine() { return predictor_.engine(); }

 private:
  Predictor predictor_;
};

}  // namespace xsam
