#include "bundle.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <climits>
#include <cmath>
#include <cstdlib>
#include <set>

#include "sha256.hpp"

namespace xsam {
namespace {

const char kManifestFile[] = "manifest.json";

Status ReadTensorSpecs(const Json& list, const std::string& where, std::vector<TensorSpec>* out) {
  if (!list.is_array()) return BundleError(where + " must be a list");
  for (const Json& item : list.items()) {
    TensorSpec spec;
    XSAM_RETURN_IF_ERROR(GetString(item, "name", &spec.name, where));
    XSAM_RETURN_IF_ERROR(GetString(item, "dtype", &spec.dtype, where));
    XSAM_RETURN_IF_ERROR(GetInts(item["shape"], &spec.shape, where + " '" + spec.name + "' shape"));
    out->push_back(std::move(spec));
  }
  return Status::Ok();
}

Status ReadGraph(const Json& g, GraphSpec* out) {
  const std::string where = "manifest graph";
  XSAM_RETURN_IF_ERROR(GetString(g, "name", &out->name, where));
  XSAM_RETURN_IF_ERROR(GetString(g, "backend", &out->backend, where + " " + out->name));
  const std::string at = "manifest graph " + out->backend + "/" + out->name;
  XSAM_RETURN_IF_ERROR(GetString(g, "precision", &out->precision, at));
  if (!g["files"].is_array() || g["files"].size() == 0) return BundleError(at + ": 'files' must list files");
  for (const Json& f : g["files"].items()) {
    if (!f.is_string()) return BundleError(at + ": 'files' must be strings");
    out->files.push_back(f.as_string());
  }
  XSAM_RETURN_IF_ERROR(ReadTensorSpecs(g["inputs"], at + " inputs", &out->inputs));
  XSAM_RETURN_IF_ERROR(ReadTensorSpecs(g["outputs"], at + " outputs", &out->outputs));
  for (const Json& m : g["methods"].items()) {
    MethodSpec method;
    XSAM_RETURN_IF_ERROR(GetString(m, "name", &method.name, at + " method"));
    XSAM_RETURN_IF_ERROR(ReadTensorSpecs(m["inputs"], at + "." + method.name + " inputs", &method.inputs));
    XSAM_RETURN_IF_ERROR(ReadTensorSpecs(m["outputs"], at + "." + method.name + " outputs", &method.outputs));
    method.dynamic_tokens = m["dynamic_tokens"].is_bool() && m["dynamic_tokens"].as_bool();
    out->methods.push_back(std::move(method));
  }
  out->placement = g["placement"];
  const Json* partitioner = out->placement.find("partitioner");
  out->partitioner = partitioner && partitioner->is_string() ? partitioner->as_string() : "xnnpack";
  if (g["macs"].is_integer()) out->macs = g["macs"].as_int();
  return Status::Ok();
}

Status ReadTriple(const Json& obj, const std::string& key, double out[3]) {
  std::vector<double> v;
  XSAM_RETURN_IF_ERROR(GetDoubles(obj, key, &v, "manifest preprocess"));
  if (v.size() != 3) return BundleError("manifest preprocess: '" + key + "' needs 3 values (R, G, B)");
  for (int i = 0; i < 3; ++i) out[i] = v[i];
  return Status::Ok();
}

Status ReadPreprocess(const Json& p, PreprocessSpec* out) {
  const std::string where = "manifest preprocess";
  static const std::set<std::string> kKnown = {
      "seg_size",   "global_size", "pad_to_square", "pixel_mean",   "pixel_std",
      "global_mean", "global_std", "pad_fill",      "point_radius", "scribble_radius"};
  for (const auto& kv : p.members()) {
    // an unknown field means a newer spec: refuse rather than silently pre-process differently
    if (!kKnown.count(kv.first)) return Unsupported(where + ": unknown field '" + kv.first + "'");
  }
  int64_t v = 0;
  XSAM_RETURN_IF_ERROR(GetInt(p, "seg_size", &v, where));
  out->seg_size = static_cast<int>(v);
  out->global_size = p["global_size"].is_integer() ? static_cast<int>(p["global_size"].as_int()) : 0;
  out->pad_to_square = p["pad_to_square"].is_bool() ? p["pad_to_square"].as_bool() : true;
  XSAM_RETURN_IF_ERROR(ReadTriple(p, "pixel_mean", out->pixel_mean));
  XSAM_RETURN_IF_ERROR(ReadTriple(p, "pixel_std", out->pixel_std));
  XSAM_RETURN_IF_ERROR(ReadTriple(p, "global_mean", out->global_mean));
  XSAM_RETURN_IF_ERROR(ReadTriple(p, "global_std", out->global_std));
  double fill[3];
  XSAM_RETURN_IF_ERROR(ReadTriple(p, "pad_fill", fill));
  for (int i = 0; i < 3; ++i) out->pad_fill[i] = static_cast<int>(fill[i]);
  XSAM_RETURN_IF_ERROR(GetInt(p, "point_radius", &v, where));
  out->point_radius = static_cast<int>(v);
  XSAM_RETURN_IF_ERROR(GetInt(p, "scribble_radius", &v, where));
  out->scribble_radius = static_cast<int>(v);
  if (out->seg_size < 1 || out->global_size < 0) return BundleError(where + ": sizes must be positive");
  return Status::Ok();
}

Status ReadTokens(const Json& t, TokenSpec* out) {
  const std::string where = "manifest model.tokens";
  XSAM_RETURN_IF_ERROR(GetString(t, "seg", &out->seg, where));
  XSAM_RETURN_IF_ERROR(GetString(t, "phrase_start", &out->phrase_start, where));
  XSAM_RETURN_IF_ERROR(GetString(t, "phrase_end", &out->phrase_end, where));
  XSAM_RETURN_IF_ERROR(GetString(t, "image", &out->image, where));
  XSAM_RETURN_IF_ERROR(GetString(t, "region", &out->region, where));
  XSAM_RETURN_IF_ERROR(GetString(t, "template", &out->template_name, where));
  out->add_bos = t["add_bos"].is_bool() ? t["add_bos"].as_bool() : true;
  return Status::Ok();
}

// XSamConfig.num_image_tokens (spec/config.py): global tokens (grid // visual_pool)² plus seg tokens
// (round(seg grid × seg_projector_downsample) // seg_pool)². Checked against the encode graph's output.
Status NumImageTokens(const Json& model, int64_t* out) {
  const Json& seg = model["seg_encoder"];
  if (!seg["image_size"].is_integer() || !seg["patch_size"].is_integer()) {
    return BundleError("manifest model.seg_encoder needs image_size and patch_size");
  }
  int64_t seg_grid = seg["image_size"].as_int() / seg["patch_size"].as_int();
  double down = model["seg_projector_downsample"].is_number() ? model["seg_projector_downsample"].as_double()
                                                              : 0.5;
  int64_t seg_pool = model["seg_pool"].is_integer() ? model["seg_pool"].as_int() : 1;
  int64_t visual_pool = model["visual_pool"].is_integer() ? model["visual_pool"].as_int() : 1;
  // Python's round() rounds half to even; std::nearbyint does the same in the default rounding mode
  int64_t token_grid = static_cast<int64_t>(std::nearbyint(static_cast<double>(seg_grid) * down));
  int64_t seg_tokens = (token_grid / seg_pool) * (token_grid / seg_pool);
  int64_t global_tokens = 0;
  const Json& glob = model["global_encoder"];
  if (glob.is_object()) {
    int64_t grid = glob["image_size"].as_int() / glob["patch_size"].as_int();
    global_tokens = (grid / visual_pool) * (grid / visual_pool);
  }
  *out = global_tokens + seg_tokens;
  return Status::Ok();
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

}  // namespace

const GraphSpec* Manifest::graph(const std::string& name, const std::string& backend) const {
  for (const GraphSpec& g : graphs) {
    if (g.name == name && g.backend == backend) return &g;
  }
  return nullptr;
}

bool Manifest::listed(const std::string& relative) const {
  if (files.count(relative)) return true;
  auto it = files.lower_bound(relative + "/");
  return it != files.end() && it->first.compare(0, relative.size() + 1, relative + "/") == 0;
}

// Every entry under `root` (relative POSIX path -> size of a regular file); a symlink, device, FIFO or
// socket anywhere is an error, as in spec/bundle.py `_tree`.
static Status WalkBundle(const std::string& root, const std::string& relative,
                         std::map<std::string, int64_t>* found) {
  const std::string folder = relative.empty() ? root : root + "/" + relative;
  DIR* dir = opendir(folder.c_str());
  if (dir == nullptr) return BundleError("cannot list " + folder);
  Status status = Status::Ok();
  while (dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    const std::string rel = relative.empty() ? name : relative + "/" + name;
    struct stat info;
    if (lstat((root + "/" + rel).c_str(), &info) != 0) {
      status = BundleError("cannot stat bundle entry " + rel);
    } else if (S_ISLNK(info.st_mode)) {
      status = BundleError("bundle entry " + rel + " is a symlink; bundles hold regular files only");
    } else if (S_ISDIR(info.st_mode)) {
      status = WalkBundle(root, rel, found);
    } else if (!S_ISREG(info.st_mode)) {
      status = BundleError("bundle entry " + rel + " is not a regular file (a device, FIFO or socket)");
    } else if (rel != "manifest.json" && rel != "manifest.sig") {
      (*found)[rel] = static_cast<int64_t>(info.st_size);
    }
    if (!status.ok()) break;
  }
  closedir(dir);
  return status;
}

std::vector<std::string> Manifest::backends() const {
  std::set<std::string> names;
  for (const GraphSpec& g : graphs) names.insert(g.backend);
  return {names.begin(), names.end()};
}

Status CheckConfined(const std::string& root, const std::string& relative) {
  if (relative.empty() || relative[0] == '/' || relative.find('\\') != std::string::npos) {
    return BundleError("bundle path '" + relative + "' must be relative to the bundle folder (no '/' or '\\' "
                       "at the start, no backslashes); re-export the bundle");
  }
  size_t start = 0;
  while (start <= relative.size()) {
    size_t end = relative.find('/', start);
    if (end == std::string::npos) end = relative.size();
    std::string part = relative.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return BundleError("bundle path '" + relative + "' leaves or escapes the bundle folder ('" + part +
                         "' component); re-export the bundle");
    }
    start = end + 1;
  }
  // a symlink inside the folder may still point out of it: compare real paths
  std::string real_root = RealPath(root);
  std::string real = RealPath(root + "/" + relative);
  if (real.empty()) return BundleError("bundle file " + relative + " is missing from " + root + "; re-export or copy it again");
  if (real_root.empty() || real.compare(0, real_root.size() + 1, real_root + "/") != 0) {
    return BundleError("bundle file " + relative + " resolves to " + real + ", outside the bundle folder " +
                       real_root + " (a symlink out of the bundle); copy the file into the bundle instead");
  }
  return Status::Ok();
}

Status LoadBundle(const std::string& folder, bool verify_checksums, Manifest* out) {
  Manifest m;
  m.root = folder;
  while (m.root.size() > 1 && m.root.back() == '/') m.root.pop_back();
  const std::string manifest_path = m.root + "/" + kManifestFile;
  if (!IsRegularFile(manifest_path)) {
    return BundleError(folder + " is not an xsam_edge bundle: no " + kManifestFile +
                       " (make one with xsam-edge export)");
  }
  std::string text;
  XSAM_RETURN_IF_ERROR(ReadFile(manifest_path, &text));
  Status parsed = Json::Parse(text, &m.raw);
  if (!parsed.ok()) return BundleError(manifest_path + " is not valid JSON: " + parsed.message());
  const Json& raw = m.raw;
  if (!raw["schema_version"].is_integer()) return BundleError(manifest_path + " has no integer schema_version");
  m.schema_version = static_cast<int>(raw["schema_version"].as_int());
  if (m.schema_version > kMaxSchemaVersion) {
    return BundleError("bundle schema version " + std::to_string(m.schema_version) +
                       " is newer than this native runtime reads (" + std::to_string(kMaxSchemaVersion) +
                       "); upgrade the runtime or re-export the bundle with a matching xsam_edge");
  }
  if (m.schema_version < kMinSchemaVersion) {
    return BundleError("bundle schema version " + std::to_string(m.schema_version) +
                       " predates sealed bundles (version " + std::to_string(kMinSchemaVersion) +
                       "); re-export it with a matching xsam_edge");
  }
  for (const char* key : {"model", "preprocess", "tokens", "slots", "files"}) {
    if (!raw[key].is_object()) return BundleError(manifest_path + " is malformed: '" + key + "' missing");
  }
  if (!raw["graphs"].is_array()) return BundleError(manifest_path + " is malformed: 'graphs' missing");

  // files: each listed with {sha256, size}, confined to the folder; the folder holds exactly those
  for (const auto& kv : raw["files"].members()) {
    const Json& record = kv.second;
    if (!record.is_object() || !record["sha256"].is_string() || !record["size"].is_integer() ||
        record["size"].as_int() < 0) {
      return BundleError(manifest_path + ": files." + kv.first + " must be {\"sha256\", \"size\"}");
    }
    XSAM_RETURN_IF_ERROR(CheckConfined(m.root, kv.first));
    m.files[kv.first] = record["sha256"].as_string();
    m.sizes[kv.first] = record["size"].as_int();
  }
  std::map<std::string, int64_t> found;
  XSAM_RETURN_IF_ERROR(WalkBundle(m.root, "", &found));
  for (const auto& kv : m.sizes) {
    auto it = found.find(kv.first);
    if (it == found.end()) {
      return BundleError("bundle file " + kv.first + " is missing from " + m.root + "; re-export or copy it again");
    }
    if (it->second != kv.second) {
      return BundleError("bundle file " + kv.first + " is " + std::to_string(it->second) +
                         " bytes, its manifest says " + std::to_string(kv.second) +
                         " (corrupted, truncated or replaced); re-export or copy the bundle again");
    }
  }
  for (const auto& kv : found) {
    if (!m.files.count(kv.first)) {
      return BundleError(m.root + " holds " + kv.first + ", which its manifest does not list; remove it (a " +
                         "sealed bundle holds its listed files only) or re-export");
    }
  }
  if (verify_checksums) {  // sizes first: a huge replaced file is refused before it is read
    for (const auto& kv : m.files) {
      std::string hex;
      XSAM_RETURN_IF_ERROR(Sha256File(m.path(kv.first), &hex));
      if (hex != kv.second) {
        return BundleError("bundle file " + kv.first +
                           " does not match its checksum (corrupted or edited); re-export or copy the bundle again");
      }
    }
  }

  // graphs: every file they name has a checksum (a folder's files count, as Core ML packages are folders)
  for (const Json& g : raw["graphs"].items()) {
    GraphSpec graph;
    XSAM_RETURN_IF_ERROR(ReadGraph(g, &graph));
    for (const std::string& f : graph.files) {
      bool listed = m.files.count(f) > 0;
      for (auto it = m.files.lower_bound(f + "/"); !listed && it != m.files.end(); ++it) {
        listed = it->first.compare(0, f.size() + 1, f + "/") == 0;
        if (!listed) break;
      }
      if (!listed) return BundleError("graph " + graph.backend + "/" + graph.name + " names " + f +
                                      ", which has no checksum in the manifest; re-export the bundle");
      XSAM_RETURN_IF_ERROR(CheckConfined(m.root, f));
    }
    m.graphs.push_back(std::move(graph));
  }
  for (const Json& gf : raw["golden"].items()) {
    if (!gf.is_string() || !m.files.count(gf.as_string())) {
      return BundleError(manifest_path + ": golden entries must be listed files");
    }
    m.golden.push_back(gf.as_string());
  }

  m.model = raw["model"];
  XSAM_RETURN_IF_ERROR(ReadTokens(m.model["tokens"], &m.tokens));
  XSAM_RETURN_IF_ERROR(ReadPreprocess(raw["preprocess"], &m.preprocess));
  XSAM_RETURN_IF_ERROR(NumImageTokens(m.model, &m.num_image_tokens));
  for (const char* key : {"seg", "phrase_start", "phrase_end", "eos", "pad"}) {
    int64_t v = 0;
    XSAM_RETURN_IF_ERROR(GetInt(raw["tokens"], key, &v, "manifest tokens"));
    m.token_ids[key] = v;
  }
  m.token_ids["bos"] = raw["tokens"]["bos"].is_integer() ? raw["tokens"]["bos"].as_int() : -1;
  const std::string slots = "manifest slots";
  XSAM_RETURN_IF_ERROR(GetInt(raw["slots"], "max_regions", &m.max_regions, slots));
  XSAM_RETURN_IF_ERROR(GetInt(raw["slots"], "max_conditions", &m.max_conditions, slots));
  XSAM_RETURN_IF_ERROR(GetInt(raw["slots"], "prefill_len", &m.prefill_len, slots));
  XSAM_RETURN_IF_ERROR(GetInt(raw["slots"], "max_seq", &m.max_seq, slots));
  if (!m.files.count("tokenizer.json")) return BundleError("bundle has no checksummed tokenizer.json");
  *out = std::move(m);
  return Status::Ok();
}

}  // namespace xsam
