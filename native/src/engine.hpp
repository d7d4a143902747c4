// The bundle's ExecuTorch programs through the Module API (runtime/session.py GraphEngine +
// backends/executorch/runtime.py): fixed-shape graphs checked against the manifest, and the joint llm.pte
// whose prefill / decode / read_cache / write_cache methods share the KV cache (share_memory_arenas).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bundle.hpp"
#include "status.hpp"

namespace executorch::extension::module {
class Module;
}

namespace xsam {

// A dense tensor as the host holds it: float32, int32 or int64 data in a byte buffer.
struct Tensor {
  std::vector<int64_t> shape;
  std::string dtype = "float32";
  std::vector<uint8_t> bytes;

  static Tensor Floats(std::vector<int64_t> shape, const std::vector<float>& values);
  static Tensor Ints(std::vector<int64_t> shape, const std::string& dtype, const std::vector<int64_t>& values);
  size_t numel() const;
  const float* f() const { return reinterpret_cast<const float*>(bytes.data()); }
  float* f() { return reinterpret_cast<float*>(bytes.data()); }
};

// Called after every graph call with the harness's names (encode_image, embed, region, segment, llm_prefill,
// llm_decode), the wall time, and whether any float output was non-finite.
using GraphObserver = std::function<void(const std::string& name, double seconds, bool nonfinite)>;

class Method {
 public:
  // `dynamic_tokens`: the token axis (axis 1 of a 3-D input, axis 0 of a 1-D one) takes 1 .. its listed size.
  Method(std::shared_ptr<executorch::extension::module::Module> module, std::string program, std::string method,
         std::vector<TensorSpec> inputs, std::vector<TensorSpec> outputs, bool dynamic_tokens = false);
  Status Load();
  Status Run(const std::vector<const Tensor*>& inputs, std::vector<Tensor>* outputs) const;
  const std::vector<TensorSpec>& inputs() const { return inputs_; }
  const std::vector<TensorSpec>& outputs() const { return outputs_; }
  bool dynamic_tokens() const { return dynamic_tokens_; }

 private:
  bool Fits(size_t i, const std::vector<int64_t>& shape) const;

  std::shared_ptr<executorch::extension::module::Module> module_;
  std::string program_, method_;
  std::vector<TensorSpec> inputs_, outputs_;
  bool dynamic_tokens_ = false;
};

class Engine {
 public:
  // Load every graph of `backend` ("executorch") named in the manifest.
  Status Open(const Manifest& manifest);

  Status Encode(const Tensor& seg_pixels, const Tensor* global_pixels, std::vector<Tensor>* features);
  Status Embed(const Tensor& ids, Tensor* embeddings);
  Status Region(const Tensor& region_grid, const Tensor& masks, Tensor* tokens);
  Status Segment(const std::vector<Tensor>& decoder_inputs, const Tensor& cond, const Tensor& valid,
                 const Tensor& seg, Tensor* class_logits, Tensor* mask_logits);
  // One LLM step: prefill (T = chunk, or fewer where the prefill is dynamic) or decode (T = 1) by the row count.
  Status Step(const Tensor& embeds, const Tensor& positions, Tensor* projected, Tensor* logits);
  Status ReadCache(std::vector<Tensor>* state);
  Status WriteCache(const std::vector<Tensor>& state);
  Status ResetCache();

  int64_t embed_chunk() const { return embed_chunk_; }
  int64_t prefill_chunk() const { return prefill_chunk_; }
  // A short prefill chunk is left-padded to `prefill_chunk()` rows (a bundle whose prefill has a fixed T).
  bool pads_prefill() const { return !prefill_->dynamic_tokens(); }
  // Rows given to the LLM methods so far, padding included (what a caller can check the call pattern by).
  int64_t llm_rows() const { return llm_rows_; }
  void set_observer(GraphObserver observer) { observer_ = std::move(observer); }

 private:
  Status Timed(const std::string& name, const Method& m, const std::vector<const Tensor*>& in,
               std::vector<Tensor>* out);

  std::unique_ptr<Method> encode_, embed_, region_, segment_, prefill_, decode_, read_cache_, write_cache_;
  std::vector<Tensor> empty_cache_;
  int64_t embed_chunk_ = 0, prefill_chunk_ = 0, llm_rows_ = 0;
  GraphObserver observer_;
};

}  // namespace xsam
