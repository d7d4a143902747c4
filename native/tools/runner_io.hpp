// What the runner writes: result summaries as `xsam-edge run` writes them, run-length masks for parity tests,
// the overlay PNG, and command-line helpers.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "json.hpp"
#include "types.hpp"

namespace xsam {

// SegmentationResult.to_json(): {"text", "masks": [{label, label_id, score, area, box_xyxy}]}.
Json ResultSummary(const Result& result);
// Row-major run lengths of a 0/1 mask, starting with a run of zeros.
Json MaskRle(const std::vector<uint8_t>& mask);
// The image with each mask's palette colour blended in (spec/image_io.py overlay, alpha 0.5).
Image Overlay(const Image& image, const Result& result);

// --key value options (repeatable ones collect every value) and positional words.
struct Args {
  std::map<std::string, std::vector<std::string>> options;
  std::vector<std::string> positional;
  bool has(const std::string& k) const { return options.count(k) > 0; }
  std::string get(const std::string& k, const std::string& fallback = "") const;
};
Args ParseArgs(int argc, char** argv, int first);

// The request the flags describe (--task, --text, --categories, --point, --box, --scribble, --mask), as
// `xsam-edge run` builds it, or one entry of a --request JSON file.
Status RequestFromArgs(const Args& args, const Image& image, Request* out);

int RunBench(const Args& args);

}  // namespace xsam
