// A bundle folder opened and checked as spec/bundle.py load_bundle does: manifest.json parsed, schema version
// read, every listed file present, inside the folder and matching its sha256; then the parts this core needs
// (config, pre-processing spec, token ids, slots, graph entries) read into plain structs.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "json.hpp"
#include "status.hpp"

namespace xsam {

constexpr int kMaxSchemaVersion = 4;  // spec/bundle.py SCHEMA_VERSION this core reads (sealed bundles)
constexpr int kMinSchemaVersion = 4;  // older bundles list no sizes and are not sealed: re-export them

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;  // numpy spelling: float32, int64, int32, ...
};

struct MethodSpec {
  std::string name;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  bool dynamic_tokens = false;  // the token axis takes 1 .. its listed size (a prefill at its own length)
};

struct GraphSpec {
  std::string name;
  std::string backend;
  std::string precision;
  std::vector<std::string> files;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  std::vector<MethodSpec> methods;
  std::string partitioner;  // placement.partitioner ("xnnpack" when absent, as the Python runtime reads it)
  Json placement;
  int64_t macs = -1;
};

// TokenConfig (spec/config.py): spellings of the special tokens and the chat template.
struct TokenSpec {
  std::string seg, phrase_start, phrase_end, image, region, template_name;
  bool add_bos = true;
};

// PreprocessSpec (spec/preprocess.py), every constant as the manifest stores it.
struct PreprocessSpec {
  int seg_size = 0;
  int global_size = 0;  // 0: no global (SigLIP) branch
  bool pad_to_square = true;
  double pixel_mean[3], pixel_std[3], global_mean[3], global_std[3];
  int pad_fill[3];
  int point_radius = 0, scribble_radius = 0;
};

struct Manifest {
  std::string root;  // the bundle folder
  int schema_version = 0;
  Json raw;          // the whole manifest, for fields read once (source, quantization)
  Json model;        // XSamConfig as a dict
  TokenSpec tokens;
  PreprocessSpec preprocess;
  std::map<std::string, int64_t> token_ids;  // seg, phrase_start, phrase_end, bos (-1: none), eos, pad
  int64_t max_regions = 0, max_conditions = 0, prefill_len = 0, max_seq = 0;
  int64_t num_image_tokens = 0;  // derived from the config as XSamConfig.num_image_tokens
  std::vector<GraphSpec> graphs;
  std::map<std::string, std::string> files;  // relative path -> sha256
  std::map<std::string, int64_t> sizes;      // relative path -> bytes
  std::vector<std::string> golden;

  const GraphSpec* graph(const std::string& name, const std::string& backend) const;
  std::vector<std::string> backends() const;
  std::string path(const std::string& relative) const { return root + "/" + relative; }
  // true when `relative` is a listed file or a listed folder (a Core ML package) of the bundle
  bool listed(const std::string& relative) const;
};

// Open and verify a bundle. `verify_checksums` false skips the sha256 pass (the runner's --no-verify, for
// repeated benches of a bundle checked once); presence and confinement are always checked.
Status LoadBundle(const std::string& folder, bool verify_checksums, Manifest* out);

// A relative path is confined when it is not absolute, has no "." / ".." / empty component, and its real
// path (symlinks resolved) lies inside the real path of `root`.
Status CheckConfined(const std::string& root, const std::string& relative);

}  // namespace xsam
