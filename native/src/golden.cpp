#include "golden.hpp"

#include <cstring>

#include "image.hpp"
#include "stb_image.h"

namespace xsam {
namespace {

uint32_t U32(const std::string& d, size_t at) {
  return static_cast<uint32_t>(static_cast<uint8_t>(d[at])) | static_cast<uint32_t>(static_cast<uint8_t>(d[at + 1])) << 8 |
         static_cast<uint32_t>(static_cast<uint8_t>(d[at + 2])) << 16 |
         static_cast<uint32_t>(static_cast<uint8_t>(d[at + 3])) << 24;
}
uint16_t U16(const std::string& d, size_t at) {
  return static_cast<uint16_t>(static_cast<uint8_t>(d[at]) | static_cast<uint8_t>(d[at + 1]) << 8);
}

// One .npy member: magic, version, header dict ('descr', 'fortran_order', 'shape'), raw data.
Status ParseNpy(const std::string& data, const std::string& name, NpyArray* out) {
  if (data.size() < 10 || data.compare(0, 6, "\x93NUMPY") != 0) return BundleError(name + " is not a .npy array");
  int major = static_cast<uint8_t>(data[6]);
  size_t header_len = major == 1 ? U16(data, 8) : U32(data, 8);
  size_t header_at = major == 1 ? 10 : 12;
  if (header_at + header_len > data.size()) return BundleError(name + ": truncated .npy header");
  std::string header = data.substr(header_at, header_len);
  auto field = [&](const std::string& key) -> std::string {
    size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) return "";
    size_t colon = header.find(':', k);
    return header.substr(colon + 1);
  };
  std::string descr = field("descr");
  size_t q1 = descr.find('\''), q2 = descr.find('\'', q1 + 1);
  out->descr = descr.substr(q1 + 1, q2 - q1 - 1);
  std::string fortran = field("fortran_order");
  bool fortran_order = fortran.substr(0, fortran.find(',')).find("True") != std::string::npos;
  std::string shape = field("shape");
  shape = shape.substr(shape.find('(') + 1, shape.find(')') - shape.find('(') - 1);
  out->shape.clear();
  for (size_t p = 0; p < shape.size();) {
    size_t comma = shape.find(',', p);
    std::string dim = shape.substr(p, comma == std::string::npos ? std::string::npos : comma - p);
    if (dim.find_first_of("0123456789") != std::string::npos) out->shape.push_back(std::stoll(dim));
    if (comma == std::string::npos) break;
    p = comma + 1;
  }
  out->bytes.assign(data.begin() + static_cast<long>(header_at + header_len), data.end());
  if (fortran_order && out->shape.size() > 1) {
    // column-major on disk (numpy writes a fancy-indexed slice so): reorder to row-major
    const size_t item = out->descr.size() > 2 ? static_cast<size_t>(std::stoi(out->descr.substr(2))) : 1;
    const size_t n = out->numel(), dims = out->shape.size();
    if (out->bytes.size() < n * item) return BundleError(name + ": truncated .npy data");
    std::vector<uint8_t> c_order(n * item);
    std::vector<size_t> index(dims, 0);
    for (size_t i = 0; i < n; ++i) {  // i walks row-major; its column-major offset sums index[d] * stride_f[d]
      size_t offset = 0, stride = 1;
      for (size_t d = 0; d < dims; ++d) {
        offset += index[d] * stride;
        stride *= static_cast<size_t>(out->shape[d]);
      }
      std::memcpy(&c_order[i * item], &out->bytes[offset * item], item);
      for (size_t d = dims; d-- > 0;) {
        if (++index[d] < static_cast<size_t>(out->shape[d])) break;
        index[d] = 0;
      }
    }
    out->bytes = std::move(c_order);
  }
  return Status::Ok();
}

Status LoadMaskPrompt(const std::string& file, Prompt* p) {
  return LoadMask(file, &p->mask, &p->mask_height, &p->mask_width);
}

}  // namespace

size_t NpyArray::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

std::vector<float> NpyArray::AsFloats() const {
  std::vector<float> out(numel());
  for (size_t i = 0; i < out.size(); ++i) {
    if (descr == "<f4") std::memcpy(&out[i], &bytes[i * 4], 4);
    else if (descr == "<f8") { double v; std::memcpy(&v, &bytes[i * 8], 8); out[i] = static_cast<float>(v); }
    else if (descr == "<i8") { int64_t v; std::memcpy(&v, &bytes[i * 8], 8); out[i] = static_cast<float>(v); }
    else if (descr == "|b1" || descr == "|u1") out[i] = bytes[i];
  }
  return out;
}

Status LoadNpz(const std::string& path, std::map<std::string, NpyArray>* arrays) {
  std::string zip;
  XSAM_RETURN_IF_ERROR(ReadFile(path, &zip));
  // the end-of-central-directory record, then every central directory entry
  size_t eocd = std::string::npos;
  for (size_t i = zip.size() >= 22 ? zip.size() - 22 : 0; i + 1 > 0 && i + 4 <= zip.size(); --i) {
    if (U32(zip, i) == 0x06054b50) {
      eocd = i;
      break;
    }
    if (i == 0) break;
  }
  if (eocd == std::string::npos) return BundleError(path + " is not a zip (npz) file");
  size_t entries = U16(zip, eocd + 10), at = U32(zip, eocd + 16);
  for (size_t e = 0; e < entries; ++e) {
    if (at + 46 > zip.size() || U32(zip, at) != 0x02014b50) return BundleError(path + ": bad zip directory");
    uint16_t method = U16(zip, at + 10);
    uint32_t csize = U32(zip, at + 20), usize = U32(zip, at + 24);
    uint16_t nlen = U16(zip, at + 28), xlen = U16(zip, at + 30), clen = U16(zip, at + 32);
    uint32_t local = U32(zip, at + 42);
    std::string name = zip.substr(at + 46, nlen);
    at += 46 + nlen + xlen + clen;
    if (csize == 0xFFFFFFFF || usize == 0xFFFFFFFF || local == 0xFFFFFFFF) {
      return Unsupported(path + ": zip64 members (arrays over 4 GB) are not read");
    }
    size_t data_at = local + 30 + U16(zip, local + 26) + U16(zip, local + 28);
    if (data_at + csize > zip.size()) return BundleError(path + ": truncated member " + name);
    std::string raw;
    if (method == 0) {
      raw = zip.substr(data_at, csize);
    } else if (method == 8) {
      raw.resize(usize);
      // stb 2.27 reports "unexpected end" when a stream's last code sits in its final bits; zero padding
      // after the stream (never read as data: the final block ends it) avoids that
      std::string input = zip.substr(data_at, csize) + std::string(16, '\0');
      int n = stbi_zlib_decode_noheader_buffer(&raw[0], static_cast<int>(usize), input.data(),
                                               static_cast<int>(input.size()));
      if (n != static_cast<int>(usize)) return BundleError(path + ": cannot inflate member " + name);
    } else {
      return Unsupported(path + ": zip compression method " + std::to_string(method));
    }
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0) name.resize(name.size() - 4);
    XSAM_RETURN_IF_ERROR(ParseNpy(raw, name, &(*arrays)[name]));
  }
  return Status::Ok();
}

Status RequestFromJson(const Json& e, const std::string& root, Request* out) {
  Request r;
  XSAM_RETURN_IF_ERROR(ParseTask(e["task"].as_string(), &r.task));
  if (e["text"].is_string()) {
    r.has_text = true;
    r.text = e["text"].as_string();
  }
  for (const Json& c : e["categories"].items()) r.categories.push_back(c.as_string());
  if (e["image"].is_string()) XSAM_RETURN_IF_ERROR(LoadImage(root + "/" + e["image"].as_string(), &r.image));
  for (const Json& p : e["prompts"].items()) {
    const std::string type = p["type"].as_string();
    Prompt prompt;
    if (type == "point") {
      prompt = Prompt::Point(p["x"].as_double(), p["y"].as_double());
    } else if (type == "box") {
      const Json& b = p["xyxy"];
      prompt = Prompt::Box(b[0].as_double(), b[1].as_double(), b[2].as_double(), b[3].as_double());
    } else if (type == "scribble") {
      prompt.kind = Prompt::Kind::kScribble;
      for (const Json& pt : p["points"].items()) prompt.points.push_back({pt[0].as_double(), pt[1].as_double()});
    } else if (type == "mask") {
      prompt.kind = Prompt::Kind::kMask;
      XSAM_RETURN_IF_ERROR(LoadMaskPrompt(root + "/" + p["file"].as_string(), &prompt));
    } else {
      return InvalidArgument("unknown prompt type '" + type + "' (point, box, scribble, mask)");
    }
    r.prompts.push_back(std::move(prompt));
  }
  *out = std::move(r);
  return Status::Ok();
}

Json RequestToJson(const Request& r) {
  Json j = Json::object();
  j.set("task", TaskName(r.task));
  j.set("text", r.has_text ? Json(r.text) : Json());
  Json cats = Json::array();
  for (const std::string& c : r.categories) cats.push(c);
  j.set("categories", cats);
  Json prompts = Json::array();
  for (const Prompt& p : r.prompts) {
    Json pj = Json::object();
    if (p.kind == Prompt::Kind::kPoint) {
      pj.set("type", "point");
      pj.set("x", p.points[0].first);
      pj.set("y", p.points[0].second);
    } else if (p.kind == Prompt::Kind::kBox) {
      pj.set("type", "box");
      pj.set("xyxy", Json(Json::Array{p.box[0], p.box[1], p.box[2], p.box[3]}));
    } else if (p.kind == Prompt::Kind::kScribble) {
      pj.set("type", "scribble");
      Json pts = Json::array();
      for (const auto& pt : p.points) pts.push(Json(Json::Array{pt.first, pt.second}));
      pj.set("points", pts);
    } else {
      pj.set("type", "mask");
    }
    prompts.push(pj);
  }
  j.set("prompts", prompts);
  return j;
}

Status LoadGolden(const std::string& folder, std::vector<GoldenCase>* cases) {
  std::string text;
  XSAM_RETURN_IF_ERROR(ReadFile(folder + "/requests.json", &text));
  Json doc;
  Status st = Json::Parse(text, &doc);
  if (!st.ok()) return BundleError("golden requests in " + folder + " are unreadable: " + st.message());
  if (doc["version"].as_int() > 1) return BundleError("golden vectors in " + folder + " are of a newer version");
  std::map<std::string, NpyArray> arrays;
  XSAM_RETURN_IF_ERROR(LoadNpz(folder + "/outputs.npz", &arrays));
  const Json& requests = doc["requests"];
  for (size_t i = 0; i < requests.size(); ++i) {
    GoldenCase c;
    XSAM_RETURN_IF_ERROR(RequestFromJson(requests[i], folder, &c.request));
    const std::string suffix = "_" + std::to_string(i);
    for (auto& kv : arrays) {
      const std::string& k = kv.first;
      if (k.size() > suffix.size() && k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0 &&
          k.find('_', k.rfind('_') + 1) == std::string::npos && k.substr(k.rfind('_')) == suffix) {
        c.outputs[k.substr(0, k.size() - suffix.size())] = kv.second;
      }
    }
    cases->push_back(std::move(c));
  }
  return Status::Ok();
}

}  // namespace xsam
