#include "plan.hpp"

#include <algorithm>

#include "preprocess.hpp"
#include "prompts.hpp"
#include "sha256.hpp"

namespace xsam {
namespace {

constexpr int64_t kPadPosition = -1;  // runtime/host.py: a padding row writes no cache slot

// image_key: identity of an image's pixels (the encoded image is reused while it is the same).
std::string ImageKey(const Image& image) {
  std::string bytes(image.data.begin(), image.data.end());
  return Sha256Hex(bytes) + std::to_string(image.height) + "x" + std::to_string(image.width);
}

}  // namespace

Status Predictor::Open(const Manifest& manifest, int max_new_tokens) {
  manifest_ = manifest;
  max_new_tokens_ = max_new_tokens;
  XSAM_RETURN_IF_ERROR(tokenizer_.Load(manifest_.path("tokenizer.json"), manifest_));
  XSAM_RETURN_IF_ERROR(engine_.Open(manifest_));
  const GraphSpec* enc = manifest_.graph("encode_image", "executorch");
  const TensorSpec& image_tokens = enc->outputs.at(0);
  if (image_tokens.shape.size() != 3 || image_tokens.shape[1] != manifest_.num_image_tokens) {
    return BundleError("encode_image's image_tokens output does not hold the config's " +
                       std::to_string(manifest_.num_image_tokens) + " image tokens; re-export the bundle");
  }
  hidden_ = image_tokens.shape[2];
  projected_dim_ = manifest_.graph("llm", "executorch")->outputs.at(0).shape.at(2);
  return Status::Ok();
}

Status Predictor::Encode(const std::string& text, std::vector<int64_t>* ids) const {
  XSAM_RETURN_IF_ERROR(tokenizer_.Encode(text, manifest_.tokens.add_bos, ids));
  return ExpandImagePlaceholder(ids, manifest_.num_image_tokens);
}

Status Predictor::SetImage(const Image& image) {
  std::string key = ImageKey(image);
  if (image_ && image_->key == key) return Status::Ok();
  image_.reset();
  auto enc = std::make_unique<Encoded>();
  enc->key = key;
  const PreprocessSpec& spec = manifest_.preprocess;
  std::pair<int, int> scaled;
  Tensor seg = Tensor::Floats({1, 3, spec.seg_size, spec.seg_size}, Letterbox(image, spec, &scaled));
  Tensor glob;
  if (spec.global_size > 0) glob = Tensor::Floats({1, 3, spec.global_size, spec.global_size}, GlobalPixels(image, spec));
  XSAM_RETURN_IF_ERROR(engine_.Encode(seg, spec.global_size > 0 ? &glob : nullptr, &enc->features));
  enc->geometry = {image.height, image.width, scaled.first, scaled.second, spec.seg_size};
  std::string prefix;
  XSAM_RETURN_IF_ERROR(ImagePrefix(manifest_.tokens, &prefix));
  XSAM_RETURN_IF_ERROR(Encode(prefix, &enc->prefix_ids));
  XSAM_RETURN_IF_ERROR(engine_.ResetCache());
  std::vector<float> logits;
  XSAM_RETURN_IF_ERROR(Forward(*enc, enc->prefix_ids, nullptr, 0, &enc->prefix_projected, &logits));
  XSAM_RETURN_IF_ERROR(engine_.ReadCache(&enc->prefix_state));
  image_ = std::move(enc);
  return Status::Ok();
}

// embed in fixed chunks, splice image / region tokens, then prefill in chunks (a short last one unpadded where
// the prefill method is dynamic) or one decode step
Status Predictor::Forward(const Encoded& image, const std::vector<int64_t>& ids,
                          const std::vector<float>* region_tokens, int64_t start, std::vector<float>* projected,
                          std::vector<float>* logits) {
  const int64_t n = static_cast<int64_t>(ids.size()), h = hidden_, chunk = engine_.embed_chunk();
  if (n == 0) return InvalidArgument("prefill needs at least one token");
  std::vector<float> embeds(static_cast<size_t>(n * h));
  for (int64_t i = 0; i < n; i += chunk) {
    std::vector<int64_t> part(static_cast<size_t>(chunk), 0);  // placeholders (negative ids) embed as 0
    for (int64_t j = 0; j < chunk && i + j < n; ++j) part[j] = std::max<int64_t>(ids[i + j], 0);
    Tensor out;
    XSAM_RETURN_IF_ERROR(engine_.Embed(Tensor::Ints({1, chunk}, "int32", part), &out));
    int64_t take = std::min(chunk, n - i);
    std::copy(out.f(), out.f() + take * h, embeds.begin() + i * h);
  }
  // splice: the image span is all or nothing (a request's own tokens follow the cached prefix)
  const Tensor& image_tokens = image.features[0];
  int64_t n_image = std::count(ids.begin(), ids.end(), kImageTokenId);
  int64_t n_region = std::count(ids.begin(), ids.end(), kRegionTokenId);
  int64_t given_regions = region_tokens ? static_cast<int64_t>(region_tokens->size()) / h : 0;
  if (n_image != 0 && n_image != image_tokens.shape[1]) {
    return InvalidArgument(std::to_string(n_image) + " image placeholders but " +
                           std::to_string(image_tokens.shape[1]) + " image tokens");
  }
  if (n_region != given_regions) {
    return InvalidArgument(std::to_string(n_region) + " region placeholders but " + std::to_string(given_regions) +
                           " region tokens");
  }
  int64_t next_image = 0, next_region = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* src = nullptr;
    if (ids[i] == kImageTokenId) src = image_tokens.f() + (next_image++) * h;
    else if (ids[i] == kRegionTokenId) src = region_tokens->data() + (next_region++) * h;
    if (src) std::copy(src, src + h, embeds.begin() + i * h);
  }

  Tensor out_projected, out_logits;
  projected->clear();
  if (n == 1) {  // one decode step: the decode method, not a padded prefill chunk
    XSAM_RETURN_IF_ERROR(engine_.Step(Tensor::Floats({1, 1, h}, embeds), Tensor::Ints({1}, "int64", {start}),
                                      &out_projected, &out_logits));
    projected->assign(out_projected.f(), out_projected.f() + projected_dim_);
  } else {
    const int64_t chunk = engine_.prefill_chunk();
    for (int64_t i = 0; i < n; i += chunk) {
      // a short last chunk runs at its own length where the prefill allows, else it is left-padded
      const int64_t real = std::min(chunk, n - i), t = engine_.pads_prefill() ? chunk : real, pad = t - real;
      std::vector<float> x(static_cast<size_t>(t * h), 0.0f);
      std::copy(embeds.begin() + i * h, embeds.begin() + (i + real) * h, x.begin() + pad * h);
      std::vector<int64_t> positions(static_cast<size_t>(t), kPadPosition);
      for (int64_t j = 0; j < real; ++j) positions[pad + j] = start + i + j;
      XSAM_RETURN_IF_ERROR(engine_.Step(Tensor::Floats({1, t, h}, x), Tensor::Ints({t}, "int64", positions),
                                        &out_projected, &out_logits));
      projected->insert(projected->end(), out_projected.f() + pad * projected_dim_, out_projected.f() + t * projected_dim_);
    }
  }
  logits->assign(out_logits.f(), out_logits.f() + out_logits.numel());
  return Status::Ok();
}

// the region graph over the prompt masks, K slots per call: more prompts than slots run in batches
Status Predictor::Regions(const Encoded& image, const std::vector<std::vector<float>>& masks,
                          std::vector<float>* tokens) {
  const int64_t k = manifest_.max_regions, s = manifest_.preprocess.seg_size;
  for (size_t i = 0; i < masks.size(); i += static_cast<size_t>(k)) {
    size_t batch = std::min(masks.size() - i, static_cast<size_t>(k));
    std::vector<float> padded(static_cast<size_t>(k * s * s), 0.0f);
    for (size_t j = 0; j < batch; ++j) std::copy(masks[i + j].begin(), masks[i + j].end(), padded.begin() + j * s * s);
    Tensor out;
    XSAM_RETURN_IF_ERROR(engine_.Region(image.features[1], Tensor::Floats({1, k, s, s}, padded), &out));
    tokens->insert(tokens->end(), out.f(), out.f() + batch * hidden_);
  }
  return Status::Ok();
}

Status Predictor::Run(const Request& request, RawOutput* out) {
  XSAM_RETURN_IF_ERROR(ValidateRequest(request));
  XSAM_RETURN_IF_ERROR(SetImage(request.image));
  const Encoded& image = *image_;
  const bool generate = IsGenerateTask(request.task);
  *out = RawOutput();
  out->geometry = image.geometry;

  // prompt: the template around the question (and, in tensor mode, the answer with <SEG>)
  std::string prompt;
  XSAM_RETURN_IF_ERROR(BuildRequestPrompt(request, manifest_.tokens, !generate, &prompt));
  std::vector<int64_t> ids;
  XSAM_RETURN_IF_ERROR(Encode(prompt, &ids));
  const int64_t reserved = generate ? max_new_tokens_ : 0, budget = manifest_.max_seq - reserved;
  if (static_cast<int64_t>(ids.size()) > budget) {
    return InvalidArgument("the prompt needs " + std::to_string(ids.size()) + " tokens (" +
                           std::to_string(manifest_.num_image_tokens) + " of them image tokens) but the LLM context "
                           "holds " + std::to_string(budget) +
                           (reserved ? " with " + std::to_string(reserved) + " tokens kept for the answer" : "") +
                           "; shorten the text or pass fewer categories / prompts");
  }
  const size_t start = image.prefix_ids.size();
  if (!std::equal(image.prefix_ids.begin(), image.prefix_ids.end(), ids.begin())) {
    return RuntimeError("the prompt does not start with the cached image prefix (tokenizer mismatch)");
  }

  // region tokens: one per visual prompt
  std::vector<float> region_tokens;
  if (IsPromptTask(request.task)) {
    const int h = request.image.height, w = request.image.width;
    std::vector<std::vector<float>> masks;
    for (const Prompt& p : request.prompts) {
      std::vector<uint8_t> raster = RasterizePrompt(p, h, w, manifest_.preprocess);
      masks.push_back(LetterboxMask(raster, h, w, manifest_.preprocess.seg_size));
      out->prompt_boxes.push_back(MaskBox(raster.data(), h, w));
    }
    XSAM_RETURN_IF_ERROR(Regions(image, masks, &region_tokens));
  }

  // prefill: the cached prefix, then this request's own tokens
  XSAM_RETURN_IF_ERROR(engine_.WriteCache(image.prefix_state));
  std::vector<int64_t> own(ids.begin() + static_cast<long>(start), ids.end());
  std::vector<float> projected = image.prefix_projected, rows, logits;
  XSAM_RETURN_IF_ERROR(Forward(image, own, IsPromptTask(request.task) ? &region_tokens : nullptr,
                               static_cast<int64_t>(start), &rows, &logits));
  projected.insert(projected.end(), rows.begin(), rows.end());
  out->prompt_tokens = ids.size();

  // answer: generated greedily until the template's stop word or the token budget
  if (generate) {
    std::vector<int64_t> new_ids;
    int64_t position = static_cast<int64_t>(ids.size());
    for (int step = 0; step < max_new_tokens_; ++step) {
      int64_t token = std::max_element(logits.begin(), logits.end()) - logits.begin();
      if (token == tokenizer_.eos_id()) break;
      new_ids.push_back(token);
      XSAM_RETURN_IF_ERROR(Forward(image, {token}, nullptr, position++, &rows, &logits));
      projected.insert(projected.end(), rows.begin(), rows.end());
    }
    std::string text;
    XSAM_RETURN_IF_ERROR(tokenizer_.Decode(new_ids, true, &text));
    out->has_text = true;
    out->text = Strip(text);
    ids.insert(ids.end(), new_ids.begin(), new_ids.end());
  }
  out->num_tokens = ids.size();
  if (request.task == Task::kChat) return Status::Ok();

  // conditions: <p>…</p> spans and the last <SEG> (GCG: only those of the answer)
  const size_t search_from = request.task == Task::kGcg ? out->prompt_tokens : 0;
  std::vector<std::pair<size_t, size_t>> all_spans, spans;
  XSAM_RETURN_IF_ERROR(tokenizer_.PhraseSpans(ids, generate, &all_spans));
  for (const auto& s : all_spans) {
    if (s.first >= search_from) spans.push_back(s);
  }
  std::vector<size_t> segs;
  for (size_t p : tokenizer_.SegPositions(ids)) {
    if (p >= search_from) segs.push_back(p);
  }
  if (spans.empty() || segs.empty()) return Status::Ok();
  const int64_t slots = manifest_.max_conditions, d = projected_dim_;
  if (static_cast<int64_t>(spans.size()) > slots) {
    return InvalidArgument("the request has " + std::to_string(spans.size()) + " categories / phrases but the "
                           "segment graph has " + std::to_string(slots) +
                           " condition slots; re-export with a larger --max-conditions");
  }
  std::vector<float> cond(static_cast<size_t>(slots * d), 0.0f), valid(static_cast<size_t>(slots), 0.0f);
  for (size_t i = 0; i < spans.size(); ++i) {
    const size_t s = spans[i].first, e = spans[i].second;
    for (int64_t k = 0; k < d; ++k) {
      double acc = 0;  // span average of the projected states, delimiters included
      for (size_t r = s; r <= e; ++r) acc += projected[r * d + k];
      cond[i * d + k] = static_cast<float>(acc / static_cast<double>(e - s + 1));
    }
    valid[i] = 1.0f;
  }
  std::vector<float> seg(projected.begin() + segs.back() * d, projected.begin() + (segs.back() + 1) * d);
  Tensor class_logits, mask_logits;
  XSAM_RETURN_IF_ERROR(engine_.Segment(std::vector<Tensor>(image.features.begin() + 2, image.features.end()),
                                       Tensor::Floats({1, slots, d}, cond), Tensor::Floats({1, slots}, valid),
                                       Tensor::Floats({1, d}, seg), &class_logits, &mask_logits));

  // the used condition slots, then background
  Logits& l = out->logits;
  l.queries = static_cast<int>(class_logits.shape[1]);
  const int all_columns = static_cast<int>(class_logits.shape[2]);
  l.columns = static_cast<int>(spans.size()) + 1;
  for (int q = 0; q < l.queries; ++q) {
    const float* row = class_logits.f() + static_cast<size_t>(q) * all_columns;
    for (size_t c = 0; c < spans.size(); ++c) l.cls.push_back(row[c]);
    l.cls.push_back(row[slots]);
  }
  l.mask_h = static_cast<int>(mask_logits.shape[2]);
  l.mask_w = static_cast<int>(mask_logits.shape[3]);
  l.masks.assign(mask_logits.f(), mask_logits.f() + mask_logits.numel());
  out->has_logits = true;

  // one label per condition
  if (request.task == Task::kReferring || request.task == Task::kReasoning) {
    out->labels = {Strip(request.text)};
  } else if (IsPromptTask(request.task)) {
    for (size_t k = 0; k < request.prompts.size(); ++k) out->labels.push_back("prompt " + std::to_string(k));
  } else if (request.task == Task::kGcg) {
    for (const auto& s : spans) {
      std::string label;
      XSAM_RETURN_IF_ERROR(tokenizer_.Decode(std::vector<int64_t>(ids.begin() + s.first + 1, ids.begin() + s.second),
                                             true, &label));
      out->labels.push_back(Strip(label));
    }
  } else {
    for (const std::string& c : request.categories) out->labels.push_back(Strip(c));
  }
  return Status::Ok();
}

Status Predictor::Segment(const Request& request, Result* out) {
  RawOutput raw;
  XSAM_RETURN_IF_ERROR(Run(request, &raw));
  return Finish(request.task, raw.has_logits ? &raw.logits : nullptr, raw.geometry, raw.labels, raw.prompt_boxes,
                raw.has_text, raw.text, out);
}

}  // namespace xsam
