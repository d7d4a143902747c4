// tokenizer.json loading, encoding (added tokens → normalizer → pre-tokenizer → model) and decoding,
// following the Rust `tokenizers` crate's order of steps.
#include "hf_tokenizer.hpp"

#include <algorithm>
#include <cstdio>

#include "unicode.hpp"

namespace xsam {
namespace {

bool IsWordChar(uint32_t c) { return IsLetter(c) || IsNumber(c) || c == '_'; }

// One section of the input: plain text, or an added token's id.
struct Section {
  std::string text;
  int64_t id = -1;
  size_t offset = 0;  // where the section starts in the encode input (Metaspace's "first")
};

// Split `text` on added tokens (leftmost match, longest first), honouring lstrip / rstrip / single_word.
std::vector<Section> SplitAdded(const std::string& text, const std::vector<const AddedToken*>& tokens) {
  std::vector<Section> out;
  size_t plain = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    for (const AddedToken* t : tokens) {  // sorted longest first
      if (!t->content.empty() && text.compare(i, t->content.size(), t->content) == 0) {
        if (t->single_word) {
          std::vector<uint32_t> before = DecodeUtf8(text.substr(0, i));
          std::vector<uint32_t> after = DecodeUtf8(text.substr(i + t->content.size(), 4));
          if ((!before.empty() && IsWordChar(before.back())) || (!after.empty() && IsWordChar(after[0]))) continue;
        }
        hit = t;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t start = i, end = i + hit->content.size();
    if (hit->lstrip) {
      while (start > plain && std::isspace(static_cast<unsigned char>(text[start - 1]))) --start;
    }
    if (hit->rstrip) {
      while (end < text.size() && std::isspace(static_cast<unsigned char>(text[end]))) ++end;
    }
    if (start > plain) out.push_back({text.substr(plain, start - plain), -1, plain});
    out.push_back({"", hit->id, start});
    plain = i = end;
  }
  if (plain < text.size()) out.push_back({text.substr(plain), -1, plain});
  return out;
}

std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

// tokenizers' WordPiece decoder cleanup (decoders/wordpiece.rs).
std::string Cleanup(std::string s) {
  for (const auto& r : std::vector<std::pair<const char*, const char*>>{
           {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"},
           {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}}) {
    s = ReplaceAll(s, r.first, r.second);
  }
  return s;
}

// A <0xAB> byte-fallback token's byte, or -1.
int ByteToken(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  unsigned v = 0;
  return std::sscanf(t.c_str() + 3, "%2X", &v) == 1 ? static_cast<int>(v) : -1;
}

Status ApplyDecoder(const Json& spec, std::vector<std::string>* tokens) {
  const std::string type = spec["type"].as_string();
  if (type == "Sequence") {
    for (const Json& d : spec["decoders"].items()) XSAM_RETURN_IF_ERROR(ApplyDecoder(d, tokens));
  } else if (type == "WordPiece") {
    const std::string prefix = spec["prefix"].is_string() ? spec["prefix"].as_string() : "##";
    bool cleanup = !spec["cleanup"].is_bool() || spec["cleanup"].as_bool();
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& t = (*tokens)[i];
      if (i != 0) t = t.compare(0, prefix.size(), prefix) == 0 ? t.substr(prefix.size()) : " " + t;
      if (cleanup) t = Cleanup(t);
    }
  } else if (type == "ByteLevel") {
    std::string bytes;
    for (const std::string& t : *tokens) {
      for (uint32_t cp : DecodeUtf8(t)) {
        int b = UnicodeToByte(cp);
        if (b >= 0) bytes.push_back(static_cast<char>(b));
        else AppendUtf8(cp, &bytes);
      }
    }
    // from_utf8_lossy: invalid sequences become U+FFFD
    *tokens = {EncodeUtf8(DecodeUtf8(bytes))};
  } else if (type == "Metaspace") {
    const std::string repl = spec["replacement"].is_string() ? spec["replacement"].as_string() : "\xE2\x96\x81";
    std::string scheme = spec["prepend_scheme"].is_string() ? spec["prepend_scheme"].as_string()
                         : (spec["add_prefix_space"].is_bool() && !spec["add_prefix_space"].as_bool()) ? "never"
                                                                                                      : "always";
    // as the crate does: in the first token every replacement character is dropped, not only a leading one
    for (size_t i = 0; i < tokens->size(); ++i) {
      (*tokens)[i] = ReplaceAll((*tokens)[i], repl, i == 0 && scheme != "never" ? "" : " ");
    }
  } else if (type == "Replace") {
    if (!spec["pattern"]["String"].is_string()) return Unsupported("tokenizer.json Replace decoder with a regex");
    for (std::string& t : *tokens) t = ReplaceAll(t, spec["pattern"]["String"].as_string(), spec["content"].as_string());
  } else if (type == "ByteFallback") {
    std::vector<std::string> out;
    std::string pending;  // consecutive byte tokens form one UTF-8 string
    size_t pending_count = 0;
    auto flush = [&] {
      if (pending_count == 0) return;
      if (ValidUtf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending_count; ++k) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
      pending_count = 0;
    };
    for (const std::string& t : *tokens) {
      int b = ByteToken(t);
      if (b >= 0) {
        pending.push_back(static_cast<char>(b));
        ++pending_count;
      } else {
        flush();
        out.push_back(t);
      }
    }
    flush();
    *tokens = std::move(out);
  } else if (type == "Fuse") {
    std::string all;
    for (const std::string& t : *tokens) all += t;
    *tokens = {all};
  } else if (type == "Strip") {
    const std::string content = spec["content"].as_string();
    int64_t start = spec["start"].as_int(), stop = spec["stop"].as_int();
    for (std::string& t : *tokens) {
      std::vector<uint32_t> cps = DecodeUtf8(t);
      uint32_t c = DecodeUtf8(content).empty() ? ' ' : DecodeUtf8(content)[0];
      size_t b = 0, e = cps.size();
      for (int64_t k = 0; k < start && b < e && cps[b] == c; ++k) ++b;
      for (int64_t k = 0; k < stop && e > b && cps[e - 1] == c; ++k) --e;
      t = EncodeUtf8(std::vector<uint32_t>(cps.begin() + b, cps.begin() + e));
    }
  } else {
    return Unsupported("tokenizer.json decoder '" + type + "' is not implemented in the native runtime");
  }
  return Status::Ok();
}

}  // namespace

Status HfTokenizer::FromFile(const std::string& path, HfTokenizer* out) {
  std::string text;
  XSAM_RETURN_IF_ERROR(ReadFile(path, &text));
  Json doc;
  Status st = Json::Parse(text, &doc);
  if (!st.ok()) return BundleError(path + " is not valid JSON: " + st.message());
  return FromJson(doc, out);
}

Status HfTokenizer::FromJson(const Json& doc, HfTokenizer* out) {
  HfTokenizer t;
  const Json& model = doc["model"];
  t.model_type_ = model["type"].as_string();
  if (t.model_type_.empty() && model["merges"].is_array()) t.model_type_ = "BPE";  // older files omit it
  if (t.model_type_ != "WordLevel" && t.model_type_ != "BPE") {
    return Unsupported("tokenizer.json model '" + t.model_type_ +
                       "' is not implemented in the native runtime (WordLevel and BPE are)");
  }
  for (const auto& kv : model["vocab"].members()) {
    t.vocab_[kv.first] = kv.second.as_int();
    t.id_to_token_[kv.second.as_int()] = kv.first;
  }
  t.unk_token_ = model["unk_token"].is_string() ? model["unk_token"].as_string() : "";
  if (t.model_type_ == "BPE") {
    t.byte_fallback_ = model["byte_fallback"].as_bool();
    t.fuse_unk_ = model["fuse_unk"].as_bool();
    t.ignore_merges_ = model["ignore_merges"].as_bool();
    if (model["dropout"].is_number() && model["dropout"].as_double() > 0) {
      return Unsupported("tokenizer.json BPE dropout (random merges) cannot be reproduced");
    }
    t.continuing_prefix_ = model["continuing_subword_prefix"].is_string() ? model["continuing_subword_prefix"].as_string() : "";
    t.end_of_word_suffix_ = model["end_of_word_suffix"].is_string() ? model["end_of_word_suffix"].as_string() : "";
    int64_t rank = 0;
    for (const Json& m : model["merges"].items()) {
      std::string a, b;
      if (m.is_string()) {  // "a b" (older files) or ["a", "b"]
        size_t sp = m.as_string().find(' ', 1);
        if (sp == std::string::npos) return BundleError("tokenizer.json merge '" + m.as_string() + "' has no space");
        a = m.as_string().substr(0, sp);
        b = m.as_string().substr(sp + 1);
      } else {
        a = m[0].as_string();
        b = m[1].as_string();
      }
      std::string prefixless = b.compare(0, t.continuing_prefix_.size(), t.continuing_prefix_) == 0
                                   ? b.substr(t.continuing_prefix_.size()) : b;
      auto ia = t.vocab_.find(a), ib = t.vocab_.find(b), ic = t.vocab_.find(a + prefixless);
      if (ia == t.vocab_.end() || ib == t.vocab_.end() || ic == t.vocab_.end()) {
        return BundleError("tokenizer.json merge '" + a + " " + b + "' names a token missing from the vocab");
      }
      t.merges_[{ia->second, ib->second}] = {rank++, ic->second};
    }
  }
  for (const Json& a : doc["added_tokens"].items()) {
    AddedToken tok;
    tok.id = a["id"].as_int();
    tok.content = a["content"].as_string();
    tok.special = a["special"].as_bool();
    tok.lstrip = a["lstrip"].as_bool();
    tok.rstrip = a["rstrip"].as_bool();
    tok.single_word = a["single_word"].as_bool();
    tok.normalized = a["normalized"].as_bool();
    t.added_.push_back(tok);
  }
  t.normalizer_ = doc["normalizer"];
  t.pre_tokenizer_ = doc["pre_tokenizer"];
  t.decoder_ = doc["decoder"];
  if (!doc["post_processor"].is_null()) {
    // only used with add_special_tokens=True, which the X-SAM tokenizer never asks for
  }
  *out = std::move(t);
  return Status::Ok();
}

int64_t HfTokenizer::TokenToId(const std::string& token) const {
  for (const AddedToken& a : added_) {
    if (a.content == token) return a.id;
  }
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

size_t HfTokenizer::VocabSize() const {
  int64_t top = -1;
  for (const auto& kv : id_to_token_) top = std::max(top, kv.first);
  for (const AddedToken& a : added_) top = std::max(top, a.id);
  return static_cast<size_t>(top + 1);
}

void HfTokenizer::AddSpecialToken(const std::string& content) {
  for (AddedToken& a : added_) {
    if (a.content == content) {
      a.special = true;
      return;
    }
  }
  AddedToken tok;
  auto it = vocab_.find(content);
  tok.id = it != vocab_.end() ? it->second : static_cast<int64_t>(VocabSize());
  tok.content = content;
  tok.special = true;
  added_.push_back(tok);
}

Status HfTokenizer::Normalize(const std::string& in, std::string* out) const {
  *out = in;
  return ApplyNormalizer(normalizer_, true, out);
}

Status HfTokenizer::PreTokenize(const std::string& normalized, bool first, std::vector<Piece>* out) const {
  *out = {{normalized, first}};
  return ApplyPreTokenizer(pre_tokenizer_, out);
}

Status HfTokenizer::Encode(const std::string& text, std::vector<int64_t>* ids) const {
  std::vector<const AddedToken*> raw, normalized;
  for (const AddedToken& a : added_) (a.normalized && !a.special ? normalized : raw).push_back(&a);
  auto longest_first = [](const AddedToken* x, const AddedToken* y) { return x->content.size() > y->content.size(); };
  std::stable_sort(raw.begin(), raw.end(), longest_first);
  std::stable_sort(normalized.begin(), normalized.end(), longest_first);
  for (const Section& section : SplitAdded(text, raw)) {
    if (section.id >= 0) {
      ids->push_back(section.id);
      continue;
    }
    std::string norm;
    XSAM_RETURN_IF_ERROR(Normalize(section.text, &norm));
    for (const Section& sub : SplitAdded(norm, normalized)) {
      if (sub.id >= 0) {
        ids->push_back(sub.id);
        continue;
      }
      std::vector<Piece> pieces;
      XSAM_RETURN_IF_ERROR(PreTokenize(sub.text, section.offset == 0 && sub.offset == 0, &pieces));
      for (const Piece& p : pieces) XSAM_RETURN_IF_ERROR(Model(p.text, ids));
    }
  }
  return Status::Ok();
}

Status HfTokenizer::Model(const std::string& piece, std::vector<int64_t>* ids) const {
  if (piece.empty()) return Status::Ok();
  if (model_type_ == "BPE") return Bpe(piece, ids);
  auto it = vocab_.find(piece);
  if (it != vocab_.end()) {
    ids->push_back(it->second);
    return Status::Ok();
  }
  auto unk = vocab_.find(unk_token_);
  if (unk == vocab_.end()) return InvalidArgument("'" + piece + "' is not in the vocabulary and it has no unk token");
  ids->push_back(unk->second);
  return Status::Ok();
}

Status HfTokenizer::Bpe(const std::string& piece, std::vector<int64_t>* ids) const {
  if (ignore_merges_) {
    auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return Status::Ok();
    }
  }
  // symbols: one per character (prefix on non-first, suffix on the last), byte fallback or unk when unknown
  std::vector<uint32_t> cps = DecodeUtf8(piece);
  std::vector<int64_t> symbols;
  const int64_t unk = unk_token_.empty() ? -1 : TokenToId(unk_token_);
  bool last_unk = false;
  for (size_t i = 0; i < cps.size(); ++i) {
    std::string ch;
    AppendUtf8(cps[i], &ch);
    std::string s = (i > 0 ? continuing_prefix_ : "") + ch + (i + 1 == cps.size() ? end_of_word_suffix_ : "");
    auto it = vocab_.find(s);
    if (it != vocab_.end()) {
      symbols.push_back(it->second);
      last_unk = false;
      continue;
    }
    if (byte_fallback_) {
      std::vector<int64_t> bytes;
      for (unsigned char b : ch) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        auto bt = vocab_.find(name);
        if (bt == vocab_.end()) break;
        bytes.push_back(bt->second);
      }
      if (bytes.size() == ch.size()) {
        symbols.insert(symbols.end(), bytes.begin(), bytes.end());
        last_unk = false;
        continue;
      }
    }
    if (unk < 0) return InvalidArgument("character '" + ch + "' is not in the BPE vocabulary, which has no unk token");
    if (!(fuse_unk_ && last_unk)) symbols.push_back(unk);
    last_unk = true;
  }
  // merges: always the lowest-ranked pair, leftmost among equals (the crate's priority queue order)
  while (symbols.size() > 1) {
    int64_t best_rank = -1, best_id = 0;
    size_t best_pos = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merges_.find({symbols[i], symbols[i + 1]});
      if (it != merges_.end() && (best_rank < 0 || it->second.first < best_rank)) {
        best_rank = it->second.first;
        best_id = it->second.second;
        best_pos = i;
      }
    }
    if (best_rank < 0) break;
    symbols[best_pos] = best_id;
    symbols.erase(symbols.begin() + static_cast<long>(best_pos) + 1);
  }
  ids->insert(ids->end(), symbols.begin(), symbols.end());
  return Status::Ok();
}

Status HfTokenizer::Decode(const std::vector<int64_t>& ids, bool skip_special, std::string* text) const {
  std::vector<std::string> tokens;
  for (int64_t id : ids) {
    const AddedToken* added = nullptr;
    for (const AddedToken& a : added_) {
      if (a.id == id) added = &a;
    }
    if (added) {
      if (!(skip_special && added->special)) tokens.push_back(added->content);
      continue;
    }
    auto it = id_to_token_.find(id);
    if (it != id_to_token_.end()) tokens.push_back(it->second);
  }
  return DecodeTokens(std::move(tokens), text);
}

Status HfTokenizer::DecodeTokens(std::vector<std::string> tokens, std::string* out) const {
  if (decoder_.is_null()) {
    out->clear();
    for (size_t i = 0; i < tokens.size(); ++i) *out += (i ? " " : "") + tokens[i];
    return Status::Ok();
  }
  XSAM_RETURN_IF_ERROR(ApplyDecoder(decoder_, &tokens));
  out->clear();
  for (const std::string& t : tokens) *out += t;
  return Status::Ok();
}

}  // namespace xsam
