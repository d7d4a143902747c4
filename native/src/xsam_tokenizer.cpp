#include "xsam_tokenizer.hpp"

#include <algorithm>

namespace xsam {

Status XSamTokenizer::Load(const std::string& path, const Manifest& manifest) {
  XSAM_RETURN_IF_ERROR(HfTokenizer::FromFile(path, &backend_));
  tokens_ = manifest.tokens;
  for (const std::string& t : {tokens_.seg, tokens_.phrase_start, tokens_.phrase_end}) backend_.AddSpecialToken(t);
  auto check = [&](const char* key, const std::string& spelling, int64_t* out) -> Status {
    int64_t want = manifest.token_ids.at(key);
    int64_t have = backend_.TokenToId(spelling);
    if (have != want) {
      return BundleError(std::string("manifest tokens.") + key + " is " + std::to_string(want) + " but the "
                         "bundle's tokenizer.json gives '" + spelling + "' the id " + std::to_string(have) +
                         "; re-export the bundle");
    }
    *out = want;
    return Status::Ok();
  };
  XSAM_RETURN_IF_ERROR(check("seg", tokens_.seg, &seg_));
  XSAM_RETURN_IF_ERROR(check("phrase_start", tokens_.phrase_start, &p_start_));
  XSAM_RETURN_IF_ERROR(check("phrase_end", tokens_.phrase_end, &p_end_));
  bos_ = manifest.token_ids.at("bos");
  eos_ = manifest.token_ids.at("eos");
  return Status::Ok();
}

Status XSamTokenizer::Encode(const std::string& text, bool add_bos, std::vector<int64_t>* ids) const {
  ids->clear();
  if (add_bos && bos_ >= 0) ids->push_back(bos_);
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t img = text.find(tokens_.image, pos), reg = text.find(tokens_.region, pos);
    size_t next = std::min(img, reg);
    std::string piece = text.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    if (!piece.empty()) XSAM_RETURN_IF_ERROR(backend_.Encode(piece, ids));
    if (next == std::string::npos) break;
    bool is_image = next == img;
    ids->push_back(is_image ? kImageTokenId : kRegionTokenId);
    pos = next + (is_image ? tokens_.image.size() : tokens_.region.size());
  }
  return Status::Ok();
}

Status XSamTokenizer::Decode(const std::vector<int64_t>& ids, bool skip_special, std::string* text) const {
  // a word-level decoder joins tokens with spaces: pieces around markers are joined alike
  const std::string join = backend_.IsWordLevel() ? " " : "";
  std::vector<std::string> pieces;
  std::vector<int64_t> run;
  auto flush = [&]() -> Status {
    if (run.empty()) return Status::Ok();
    std::string piece;
    XSAM_RETURN_IF_ERROR(backend_.Decode(run, skip_special, &piece));
    if (!piece.empty()) pieces.push_back(piece);
    run.clear();
    return Status::Ok();
  };
  for (int64_t id : ids) {
    if (id >= 0) {
      run.push_back(id);
      continue;
    }
    if (id != kImageTokenId && id != kRegionTokenId) {
      return InvalidArgument("unknown negative id " + std::to_string(id) + "; only -300 and -200 are markers");
    }
    XSAM_RETURN_IF_ERROR(flush());
    if (!skip_special) pieces.push_back(id == kImageTokenId ? tokens_.image : tokens_.region);
  }
  XSAM_RETURN_IF_ERROR(flush());
  text->clear();
  for (size_t i = 0; i < pieces.size(); ++i) *text += (i ? join : "") + pieces[i];
  return Status::Ok();
}

Status XSamTokenizer::PhraseSpans(const std::vector<int64_t>& ids, bool generated,
                                  std::vector<std::pair<size_t, size_t>>* spans) const {
  spans->clear();
  size_t end = ids.size();
  if (generated) {  // a phrase still open at the end (cut by the token budget) is dropped
    long open_at = -1;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] == p_start_) open_at = static_cast<long>(i);
      else if (ids[i] == p_end_) open_at = -1;
    }
    if (open_at >= 0) end = static_cast<size_t>(open_at);
  }
  long open_at = -1;
  for (size_t i = 0; i < end; ++i) {
    if (ids[i] == p_start_) {
      if (open_at >= 0) {
        if (generated) return spans->clear(), Status::Ok();
        return InvalidArgument("nested phrase: '" + tokens_.phrase_start + "' at " + std::to_string(i));
      }
      open_at = static_cast<long>(i);
    } else if (ids[i] == p_end_) {
      if (open_at < 0) {
        if (generated) return spans->clear(), Status::Ok();
        return InvalidArgument("unbalanced phrase: '" + tokens_.phrase_end + "' at " + std::to_string(i));
      }
      spans->push_back({static_cast<size_t>(open_at), i});
      open_at = -1;
    }
  }
  if (open_at >= 0) {
    if (generated) return spans->clear(), Status::Ok();
    return InvalidArgument("unbalanced phrase: '" + tokens_.phrase_start + "' is never closed");
  }
  return Status::Ok();
}

std::vector<size_t> XSamTokenizer::SegPositions(const std::vector<int64_t>& ids) const {
  std::vector<size_t> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == seg_) out.push_back(i);
  }
  return out;
}

Status ExpandImagePlaceholder(std::vector<int64_t>* ids, int64_t n) {
  long count = std::count(ids->begin(), ids->end(), kImageTokenId);
  if (count != 1) return InvalidArgument("a prompt needs exactly one <image> marker, found " + std::to_string(count));
  auto at = std::find(ids->begin(), ids->end(), kImageTokenId);
  size_t index = static_cast<size_t>(at - ids->begin());
  ids->insert(ids->begin() + static_cast<long>(index), static_cast<size_t>(n - 1), kImageTokenId);
  return Status::Ok();
}

}  // namespace xsam
