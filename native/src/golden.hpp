// Golden vectors and request files: requests.json (spec/golden.py's format, also the runner's request format)
// and outputs.npz (numpy's zip of .npy arrays, deflated), read without Python.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "json.hpp"
#include "status.hpp"
#include "types.hpp"

namespace xsam {

struct NpyArray {
  std::string descr;  // numpy dtype string: "<f4", "|b1", "<i8", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  size_t numel() const;
  std::vector<float> AsFloats() const;  // float32 / float64 / bool / int64 as float
};

Status LoadNpz(const std::string& path, std::map<std::string, NpyArray>* arrays);

// One request of a requests.json entry; image and mask files are relative to `root`.
Status RequestFromJson(const Json& entry, const std::string& root, Request* out);
Json RequestToJson(const Request& request);  // without the image (the caller names the file)

// The bundle's golden requests with their stored outputs (class_logits, mask_logits, masks per request).
struct GoldenCase {
  Request request;
  std::map<std::string, NpyArray> outputs;
};
Status LoadGolden(const std::string& folder, std::vector<GoldenCase>* cases);

}  // namespace xsam
