// spec/tokenizer.py XSamTokenizer: tokenizer.json plus <SEG>, <p>, </p> as special tokens, and the <image> /
// <region> markers split out of the text as negative ids (encoded piece by piece, so the image prefix always
// tokenizes the same). Special-token ids come from the manifest and are checked against the tokenizer.
#pragma once

#include <string>
#include <vector>

#include "bundle.hpp"
#include "hf_tokenizer.hpp"

namespace xsam {

constexpr int64_t kImageTokenId = -200;
constexpr int64_t kRegionTokenId = -300;

class XSamTokenizer {
 public:
  Status Load(const std::string& path, const Manifest& manifest);

  Status Encode(const std::string& text, bool add_bos, std::vector<int64_t>* ids) const;
  Status Decode(const std::vector<int64_t>& ids, bool skip_special, std::string* text) const;
  // <p> … </p> spans (inclusive); a malformed sequence is an error unless `generated` (then: no spans, and a
  // phrase cut by the token budget is dropped) — spec/answers.py phrase_spans.
  Status PhraseSpans(const std::vector<int64_t>& ids, bool generated,
                     std::vector<std::pair<size_t, size_t>>* spans) const;
  std::vector<size_t> SegPositions(const std::vector<int64_t>& ids) const;

  int64_t eos_id() const { return eos_; }
  const HfTokenizer& backend() const { return backend_; }

 private:
  HfTokenizer backend_;
  TokenSpec tokens_;
  int64_t bos_ = -1, eos_ = -1, seg_ = -1, p_start_ = -1, p_end_ = -1;
};

// expand_image_placeholder: the one <image> id becomes `n` copies.
Status ExpandImagePlaceholder(std::vector<int64_t>* ids, int64_t n);

}  // namespace xsam
