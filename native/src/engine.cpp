#include "engine.hpp"

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

namespace xsam {
namespace {

using executorch::aten::ScalarType;
using executorch::extension::module::Module;

const char kBackend[] = "executorch";
const char* const kLlmMethods[] = {"prefill", "decode", "read_cache", "write_cache"};

size_t DtypeSize(const std::string& dtype) { return dtype == "int64" ? 8 : dtype == "float16" ? 2 : 4; }

Status ToScalarType(const std::string& dtype, ScalarType* out) {
  if (dtype == "float32") *out = ScalarType::Float;
  else if (dtype == "int32") *out = ScalarType::Int;
  else if (dtype == "int64") *out = ScalarType::Long;
  else return Unsupported("graph tensor dtype '" + dtype + "' is not handled by the native runtime");
  return Status::Ok();
}

std::string Shape(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

std::string ErrorName(executorch::runtime::Error e) {
  return "ExecuTorch error 0x" + [&] {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%x", static_cast<unsigned>(e));
    return std::string(buf);
  }();
}

}  // namespace

Tensor Tensor::Floats(std::vector<int64_t> shape, const std::vector<float>& values) {
  Tensor t;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(float));
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

Tensor Tensor::Ints(std::vector<int64_t> shape, const std::string& dtype, const std::vector<int64_t>& values) {
  Tensor t;
  t.shape = std::move(shape);
  t.dtype = dtype;
  t.bytes.resize(values.size() * DtypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == "int64") {
      std::memcpy(&t.bytes[i * 8], &values[i], 8);
    } else {
      int32_t v = static_cast<int32_t>(values[i]);
      std::memcpy(&t.bytes[i * 4], &v, 4);
    }
  }
  return t;
}

size_t Tensor::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

Method::Method(std::shared_ptr<Module> module, std::string program, std::string method,
               std::vector<TensorSpec> inputs, std::vector<TensorSpec> outputs, bool dynamic_tokens)
    : module_(std::move(module)),
      program_(std::move(program)),
      method_(std::move(method)),
      inputs_(std::move(inputs)),
      outputs_(std::move(outputs)),
      dynamic_tokens_(dynamic_tokens) {}

bool Method::Fits(size_t i, const std::vector<int64_t>& shape) const {
  const std::vector<int64_t>& bound = inputs_[i].shape;
  if (!dynamic_tokens_ || shape.size() != bound.size() || bound.empty()) return shape == bound;
  const size_t axis = bound.size() == 3 ? 1 : 0;
  for (size_t d = 0; d < bound.size(); ++d) {
    if (d == axis ? shape[d] < 1 || shape[d] > bound[d] : shape[d] != bound[d]) return false;
  }
  return true;
}

Status Method::Load() {
  auto err = module_->load_method(method_);
  if (err != executorch::runtime::Error::Ok) {
    return RuntimeError("cannot load method '" + method_ + "' of " + program_ + " (" + ErrorName(err) +
                        "): a missing operator or delegate in this ExecuTorch build, or a corrupt program");
  }
  return Status::Ok();
}

Status Method::Run(const std::vector<const Tensor*>& inputs, std::vector<Tensor>* outputs) const {
  const std::string where = program_ + "." + method_;
  if (inputs.size() != inputs_.size()) {
    return InvalidArgument("method " + where + " takes " + std::to_string(inputs_.size()) + " inputs, got " +
                           std::to_string(inputs.size()));
  }
  // ExecuTorch's own error for a wrong shape is a bare code: check against the manifest (a dynamic prefill's
  // token axis against its upper bound; ExecuTorch resizes the method's input within it)
  std::vector<executorch::extension::TensorPtr> holders;
  std::vector<executorch::runtime::EValue> values;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = *inputs[i];
    if (!Fits(i, t.shape) || t.dtype != inputs_[i].dtype) {
      return InvalidArgument("method " + where + " input " + std::to_string(i) + " must be " + inputs_[i].dtype +
                             Shape(inputs_[i].shape) + (dynamic_tokens_ ? " (the token axis at most)" : "") +
                             ", got " + t.dtype + Shape(t.shape));
    }
    ScalarType type;
    XSAM_RETURN_IF_ERROR(ToScalarType(t.dtype, &type));
    std::vector<executorch::aten::SizesType> sizes(t.shape.begin(), t.shape.end());
    holders.push_back(executorch::extension::from_blob(const_cast<uint8_t*>(t.bytes.data()), sizes, type));
    values.emplace_back(holders.back());
  }
  auto result = module_->execute(method_, values);
  if (!result.ok()) {
    return RuntimeError("method " + where + " failed (" + ErrorName(result.error()) + ")");
  }
  // copy out at once: methods of one program share arenas, the next call may overwrite these
  outputs->clear();
  for (size_t i = 0; i < result->size(); ++i) {
    const auto& v = (*result)[i];
    if (!v.isTensor()) continue;
    const auto& et = v.toTensor();
    Tensor out;
    for (ssize_t d = 0; d < et.dim(); ++d) out.shape.push_back(et.size(d));
    out.dtype = et.scalar_type() == ScalarType::Long ? "int64" : et.scalar_type() == ScalarType::Int ? "int32"
                                                                                                    : "float32";
    out.bytes.resize(et.nbytes());
    std::memcpy(out.bytes.data(), et.const_data_ptr(), et.nbytes());
    outputs->push_back(std::move(out));
  }
  if (outputs->size() != outputs_.size()) {
    return RuntimeError("method " + where + " returned " + std::to_string(outputs->size()) +
                        " tensors; the manifest lists " + std::to_string(outputs_.size()));
  }
  return Status::Ok();
}

namespace {

// A program over the data files its entry lists after it: the .ptd that holds a tied table once for embed.pte
// and llm.pte (backends/executorch/pack.py). Every file is one the manifest lists and checksums.
std::shared_ptr<Module> OpenModule(const Manifest& m, const GraphSpec& g, bool share_memory_arenas) {
  std::vector<std::string> data;
  for (size_t i = 1; i < g.files.size(); ++i) {
    const std::string& f = g.files[i];
    if (f.size() > 4 && f.compare(f.size() - 4, 4, ".ptd") == 0) data.push_back(m.path(f));
  }
  if (data.empty()) {
    return std::make_shared<Module>(m.path(g.files[0]), Module::LoadMode::Mmap, nullptr, nullptr, nullptr,
                                    share_memory_arenas);
  }
  return std::make_shared<Module>(m.path(g.files[0]), data, Module::LoadMode::Mmap, nullptr, nullptr, nullptr,
                                  share_memory_arenas);
}

}  // namespace

Status Engine::Open(const Manifest& m) {
  auto load = [&](const std::string& name, std::unique_ptr<Method>* out) -> Status {
    const GraphSpec* g = m.graph(name, kBackend);
    if (!g) return BundleError("bundle has no " + std::string(kBackend) + "/" + name + " graph");
    if (g->partitioner == "coreml") {
      return Unsupported(std::string(kBackend) + "/" + name + " was lowered to the Core ML delegate, which only "
                         "Apple devices run; export an XNNPACK bundle (xsam-edge export --et-partitioner xnnpack)");
    }
    auto module = OpenModule(m, *g, /*share_memory_arenas=*/false);
    *out = std::make_unique<Method>(module, g->files[0], "forward", g->inputs, g->outputs);
    return (*out)->Load();
  };
  XSAM_RETURN_IF_ERROR(load("encode_image", &encode_));
  XSAM_RETURN_IF_ERROR(load("embed", &embed_));
  XSAM_RETURN_IF_ERROR(load("region", &region_));
  XSAM_RETURN_IF_ERROR(load("segment", &segment_));
  embed_chunk_ = embed_->inputs().at(0).shape.at(1);

  const GraphSpec* llm = m.graph("llm", kBackend);
  if (!llm) return BundleError("bundle has no executorch/llm program");
  std::string missing;
  for (const char* name : kLlmMethods) {
    bool found = false;
    for (const MethodSpec& ms : llm->methods) found = found || ms.name == name;
    if (!found) missing += (missing.empty() ? "" : ", ") + std::string(name);
  }
  if (!missing.empty()) {
    return BundleError("the bundle's executorch/llm program lacks the method(s) " + missing +
                       "; re-export the bundle with a current xsam_edge (xsam-edge export --backend executorch)");
  }
  // one Module for every method, sharing the mutable-buffer arena that holds the KV cache
  auto module = OpenModule(m, *llm, /*share_memory_arenas=*/true);
  for (const MethodSpec& ms : llm->methods) {
    auto method = std::make_unique<Method>(module, llm->files[0], ms.name, ms.inputs, ms.outputs, ms.dynamic_tokens);
    XSAM_RETURN_IF_ERROR(method->Load());
    if (ms.name == "prefill") prefill_ = std::move(method);
    else if (ms.name == "decode") decode_ = std::move(method);
    else if (ms.name == "read_cache") read_cache_ = std::move(method);
    else if (ms.name == "write_cache") write_cache_ = std::move(method);
  }
  prefill_chunk_ = prefill_->inputs().at(0).shape.at(1);
  for (const TensorSpec& s : write_cache_->inputs()) {
    Tensor t;
    t.shape = s.shape;
    t.dtype = s.dtype;
    t.bytes.assign(t.numel() * DtypeSize(s.dtype), 0);
    empty_cache_.push_back(std::move(t));
  }
  return ResetCache();
}

Status Engine::Timed(const std::string& name, const Method& m, const std::vector<const Tensor*>& in,
                     std::vector<Tensor>* out) {
  auto t0 = std::chrono::steady_clock::now();
  XSAM_RETURN_IF_ERROR(m.Run(in, out));
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (observer_) {
    bool nonfinite = false;
    for (const Tensor& t : *out) {
      if (t.dtype != "float32") continue;
      for (size_t i = 0; i < t.numel() && !nonfinite; ++i) nonfinite = !std::isfinite(t.f()[i]);
    }
    observer_(name, seconds, nonfinite);
  }
  return Status::Ok();
}

Status Engine::Encode(const Tensor& seg_pixels, const Tensor* global_pixels, std::vector<Tensor>* features) {
  std::vector<const Tensor*> in = {&seg_pixels};
  if (global_pixels) in.push_back(global_pixels);
  return Timed("encode_image", *encode_, in, features);
}

Status Engine::Embed(const Tensor& ids, Tensor* embeddings) {
  std::vector<Tensor> out;
  XSAM_RETURN_IF_ERROR(Timed("embed", *embed_, {&ids}, &out));
  *embeddings = std::move(out[0]);
  return Status::Ok();
}

Status Engine::Region(const Tensor& region_grid, const Tensor& masks, Tensor* tokens) {
  std::vector<Tensor> out;
  XSAM_RETURN_IF_ERROR(Timed("region", *region_, {&region_grid, &masks}, &out));
  *tokens = std::move(out[0]);
  return Status::Ok();
}

Status Engine::Segment(const std::vector<Tensor>& decoder_inputs, const Tensor& cond, const Tensor& valid,
                       const Tensor& seg, Tensor* class_logits, Tensor* mask_logits) {
  std::vector<const Tensor*> in;
  for (const Tensor& t : decoder_inputs) in.push_back(&t);
  in.push_back(&cond);
  in.push_back(&valid);
  in.push_back(&seg);
  std::vector<Tensor> out;
  XSAM_RETURN_IF_ERROR(Timed("segment", *segment_, in, &out));
  *class_logits = std::move(out[0]);
  *mask_logits = std::move(out[1]);
  return Status::Ok();
}

Status Engine::Step(const Tensor& embeds, const Tensor& positions, Tensor* projected, Tensor* logits) {
  bool decode = embeds.shape.size() == 3 && embeds.shape[1] == 1;
  llm_rows_ += embeds.shape.size() == 3 ? embeds.shape[1] : 0;
  std::vector<Tensor> out;
  XSAM_RETURN_IF_ERROR(Timed(decode ? "llm_decode" : "llm_prefill", decode ? *decode_ : *prefill_,
                             {&embeds, &positions}, &out));
  *projected = std::move(out[0]);
  *logits = std::move(out[1]);
  return Status::Ok();
}

Status Engine::ReadCache(std::vector<Tensor>* state) { return read_cache_->Run({}, state); }

Status Engine::WriteCache(const std::vector<Tensor>& state) {
  std::vector<const Tensor*> in;
  for (const Tensor& t : state) in.push_back(&t);
  std::vector<Tensor> out;
  return write_cache_->Run(in, &out);
}

// stale slots are masked anyway; zeros keep the cache exactly as a fresh program's
Status Engine::ResetCache() { return WriteCache(empty_cache_); }

}  // namespace xsam
