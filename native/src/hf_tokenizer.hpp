// A Hugging Face `tokenizers` tokenizer.json, run natively: added tokens, normalizer, pre-tokenizer, model
// (WordLevel, BPE with byte fallback) and decoder, for the components the project's tokenizers use: the
// embedded word-level one, SentencePiece-style BPE (Phi-3, Llama: Metaspace or Prepend/Replace normalizers,
// byte fallback) and byte-level BPE (Qwen, GPT-2: ByteLevel, Split on their regexes, NFC). A component or
// option outside that set is refused at load with kUnsupported naming it, never guessed at.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "json.hpp"
#include "status.hpp"

namespace xsam {

struct AddedToken {
  int64_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// One pre-token: its text (UTF-8) and whether it starts the encode input (Metaspace "first").
struct Piece {
  std::string text;
  bool first = false;
};

class HfTokenizer {
 public:
  static Status FromJson(const Json& doc, HfTokenizer* out);
  static Status FromFile(const std::string& path, HfTokenizer* out);

  // tokenizer.encode(text, add_special_tokens=False).ids
  Status Encode(const std::string& text, std::vector<int64_t>* ids) const;
  // tokenizer.decode(ids, skip_special_tokens=skip_special)
  Status Decode(const std::vector<int64_t>& ids, bool skip_special, std::string* text) const;

  // The id of a token (added tokens first, then the model's vocabulary); -1 when absent.
  int64_t TokenToId(const std::string& token) const;
  // Make `content` a special added token (XSamTokenizer adds <SEG>, <p>, </p> so), keeping a vocabulary id.
  void AddSpecialToken(const std::string& content);
  bool IsWordLevel() const { return model_type_ == "WordLevel"; }
  size_t VocabSize() const;

 private:
  Status Normalize(const std::string& in, std::string* out) const;
  Status PreTokenize(const std::string& normalized, bool first, std::vector<Piece>* out) const;
  Status Model(const std::string& piece, std::vector<int64_t>* ids) const;
  Status Bpe(const std::string& piece, std::vector<int64_t>* ids) const;
  Status DecodeTokens(std::vector<std::string> tokens, std::string* out) const;

  Json normalizer_, pre_tokenizer_, decoder_;
  std::string model_type_;
  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<int64_t, std::string> id_to_token_;
  // BPE
  std::map<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>> merges_;  // pair -> (rank, new id)
  std::string unk_token_, continuing_prefix_, end_of_word_suffix_;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::vector<AddedToken> added_;
};

// Pre-tokenizer and normalizer helpers shared with the tests.
Status ApplyPreTokenizer(const Json& spec, std::vector<Piece>* pieces);
Status ApplyNormalizer(const Json& spec, bool first, std::string* text);
// The byte-level alphabet of GPT-2 (byte -> code point) and its inverse.
uint32_t ByteToUnicode(uint8_t b);
int UnicodeToByte(uint32_t cp);  // -1 when cp is not in the alphabet

}  // namespace xsam
