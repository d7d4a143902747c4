// Normalizers and pre-tokenizers of tokenizer.json, and the three split regexes real tokenizers use (GPT-2's,
// Qwen2's, Llama-3 / cl100k's), matched by hand: no std::regex engine knows \p{L}.
#include <algorithm>
#include <cctype>

#include "hf_tokenizer.hpp"
#include "unicode.hpp"

namespace xsam {
namespace {

using Cps = std::vector<uint32_t>;

const char kGpt2Pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char kQwenPattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char kLlama3Pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

enum class Pattern { kGpt2, kQwen, kLlama3 };

bool IsNewline(uint32_t c) { return c == '\r' || c == '\n'; }
bool IsOther(uint32_t c) { return !IsWhitespace(c) && !IsLetter(c) && !IsNumber(c); }  // [^\s\p{L}\p{N}]

// Length of a contraction ('s 't 're 've 'm 'll 'd) at i, case-insensitive when `fold`; 0 if none.
size_t Contraction(const Cps& s, size_t i, bool fold) {
  if (i >= s.size() || s[i] != '\'') return 0;
  auto at = [&](size_t k) -> uint32_t {
    if (i + k >= s.size()) return 0;
    uint32_t c = s[i + k];
    return fold && c >= 'A' && c <= 'Z' ? c + 32 : c;
  };
  for (const char* suffix : {"s", "t", "re", "ve", "m", "ll", "d"}) {
    size_t n = std::char_traits<char>::length(suffix);
    bool ok = true;
    for (size_t k = 0; k < n && ok; ++k) ok = at(k + 1) == static_cast<uint32_t>(suffix[k]);
    if (ok) return n + 1;
  }
  return 0;
}

size_t Run(const Cps& s, size_t i, bool (*pred)(uint32_t)) {
  size_t j = i;
  while (j < s.size() && pred(s[j])) ++j;
  return j - i;
}

// \s+(?!\S) then \s+ : a whitespace run, leaving its last space to the next token when a non-space follows.
size_t Spaces(const Cps& s, size_t i) {
  size_t n = Run(s, i, IsWhitespace);
  if (n == 0) return 0;
  if (i + n == s.size() || n == 1) return n;
  return n - 1;
}

// Length of the leftmost-first match at i (always ≥ 1: the alternatives cover every character).
size_t MatchAt(const Cps& s, size_t i, Pattern p) {
  const bool gpt2 = p == Pattern::kGpt2;
  if (size_t n = Contraction(s, i, !gpt2)) return n;
  if (gpt2) {
    size_t sp = s[i] == ' ' ? 1 : 0;
    if (size_t n = Run(s, i + sp, IsLetter)) return sp + n;
    if (size_t n = Run(s, i + sp, IsNumber)) return sp + n;
    if (size_t n = Run(s, i + sp, IsOther)) return sp + n;
    return std::max<size_t>(Spaces(s, i), 1);
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  uint32_t c = s[i];
  if (!IsNewline(c) && !IsLetter(c) && !IsNumber(c) && i + 1 < s.size() && IsLetter(s[i + 1])) {
    return 1 + Run(s, i + 1, IsLetter);
  }
  if (size_t n = Run(s, i, IsLetter)) return n;
  // \p{N} (Qwen) or \p{N}{1,3} (Llama 3)
  if (IsNumber(c)) return p == Pattern::kQwen ? 1 : std::min<size_t>(Run(s, i, IsNumber), 3);
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  size_t sp = c == ' ' ? 1 : 0;
  if (size_t n = Run(s, i + sp, IsOther)) return sp + n + Run(s, i + sp + n, IsNewline);
  // \s*[\r\n]+ : through the last newline of the whitespace run
  size_t ws = Run(s, i, IsWhitespace);
  for (size_t k = ws; k > 0; --k) {
    if (IsNewline(s[i + k - 1])) return k;
  }
  return std::max<size_t>(Spaces(s, i), 1);
}

Status SplitRegex(const std::string& pattern, const std::vector<Piece>& in, std::vector<Piece>* out) {
  Pattern p;
  if (pattern == kGpt2Pattern) p = Pattern::kGpt2;
  else if (pattern == kQwenPattern) p = Pattern::kQwen;
  else if (pattern == kLlama3Pattern) p = Pattern::kLlama3;
  else return Unsupported("tokenizer.json split regex '" + pattern + "' is not one this runtime implements "
                          "(GPT-2, Qwen2 and Llama-3 patterns are)");
  for (const Piece& piece : in) {
    Cps s = DecodeUtf8(piece.text);
    for (size_t i = 0; i < s.size();) {
      size_t n = MatchAt(s, i, p);
      out->push_back({EncodeUtf8(Cps(s.begin() + i, s.begin() + i + n)), piece.first && i == 0});
      i += n;
    }
  }
  return Status::Ok();
}

// Split every piece where `is_delim` holds, with tokenizers' SplitDelimiterBehavior.
template <typename Pred>
void SplitBy(std::vector<Piece>* pieces, Pred is_delim, const std::string& behavior) {
  std::vector<Piece> out;
  for (const Piece& piece : *pieces) {
    Cps s = DecodeUtf8(piece.text);
    std::vector<std::pair<Cps, bool>> parts;  // (text, is delimiter)
    for (uint32_t c : s) {
      bool d = is_delim(c);
      if (!parts.empty() && !d && !parts.back().second) {
        parts.back().first.push_back(c);
      } else if (!parts.empty() && d && parts.back().second && behavior == "Contiguous") {
        parts.back().first.push_back(c);
      } else {
        parts.push_back({Cps{c}, d});
      }
    }
    std::vector<Cps> merged;
    for (size_t k = 0; k < parts.size(); ++k) {
      const auto& part = parts[k];
      if (!part.second || behavior == "Isolated" || behavior == "Contiguous") {
        merged.push_back(part.first);
      } else if (behavior == "Removed") {
        continue;
      } else if (behavior == "MergedWithPrevious") {
        if (merged.empty()) merged.push_back(part.first);
        else merged.back().insert(merged.back().end(), part.first.begin(), part.first.end());
      } else {  // MergedWithNext: the delimiter starts the next piece
        Cps next = part.first;
        if (k + 1 < parts.size() && !parts[k + 1].second) {
          next.insert(next.end(), parts[k + 1].first.begin(), parts[k + 1].first.end());
          ++k;
        }
        merged.push_back(next);
      }
    }
    for (size_t k = 0; k < merged.size(); ++k) {
      if (!merged[k].empty()) out.push_back({EncodeUtf8(merged[k]), piece.first && k == 0});
    }
  }
  *pieces = std::move(out);
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

bool AllAscii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

}  // namespace

uint32_t ByteToUnicode(uint8_t b) {
  if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
  uint32_t n = 0;  // the bytes outside those ranges map to 256, 257, ... in byte order
  for (int x = 0; x < b; ++x) {
    if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174)) ++n;
  }
  return 256 + n;
}

int UnicodeToByte(uint32_t cp) {
  static std::vector<int> table = [] {
    std::vector<int> t(512, -1);
    for (int b = 0; b < 256; ++b) t[ByteToUnicode(static_cast<uint8_t>(b))] = b;
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

Status ApplyNormalizer(const Json& spec, bool first, std::string* text) {
  if (spec.is_null()) return Status::Ok();
  const std::string type = spec["type"].as_string();
  if (type == "Sequence") {
    for (const Json& n : spec["normalizers"].items()) XSAM_RETURN_IF_ERROR(ApplyNormalizer(n, first, text));
  } else if (type == "Lowercase") {
    *text = ToLower(*text);
  } else if (type == "Prepend") {
    if (!text->empty()) *text = spec["prepend"].as_string() + *text;
  } else if (type == "Replace") {
    if (!spec["pattern"]["String"].is_string()) {
      return Unsupported("tokenizer.json Replace normalizer with a regex pattern is not implemented");
    }
    *text = ReplaceAll(*text, spec["pattern"]["String"].as_string(), spec["content"].as_string());
  } else if (type == "Strip") {
    Cps s = DecodeUtf8(*text);
    size_t b = 0, e = s.size();
    if (spec["strip_left"].as_bool()) while (b < e && IsWhitespace(s[b])) ++b;
    if (spec["strip_right"].as_bool()) while (e > b && IsWhitespace(s[e - 1])) --e;
    *text = EncodeUtf8(Cps(s.begin() + b, s.begin() + e));
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    // ASCII is invariant under every normal form; for NFC, so is text free of composable code points
    bool unchanged = AllAscii(*text);
    if (!unchanged && type == "NFC") {
      Cps s = DecodeUtf8(*text);
      unchanged = std::all_of(s.begin(), s.end(), NfcSafe);
    }
    if (!unchanged) {
      return Unsupported("text needs Unicode " + type + " normalization (combining marks or compatibility "
                         "characters), which the native tokenizer does not implement");
    }
  } else {
    return Unsupported("tokenizer.json normalizer '" + type + "' is not implemented in the native runtime");
  }
  (void)first;
  return Status::Ok();
}

Status ApplyPreTokenizer(const Json& spec, std::vector<Piece>* pieces) {
  if (spec.is_null()) return Status::Ok();
  const std::string type = spec["type"].as_string();
  if (type == "Sequence") {
    for (const Json& p : spec["pretokenizers"].items()) XSAM_RETURN_IF_ERROR(ApplyPreTokenizer(p, pieces));
  } else if (type == "WhitespaceSplit") {
    SplitBy(pieces, IsWhitespace, "Removed");
  } else if (type == "Whitespace") {
    // \w+|[^\w\s]+ : runs of word characters, runs of other non-space characters
    std::vector<Piece> out;
    auto word = [](uint32_t c) { return IsLetter(c) || IsNumber(c) || c == '_'; };
    for (const Piece& piece : *pieces) {
      Cps s = DecodeUtf8(piece.text);
      for (size_t i = 0; i < s.size();) {
        if (IsWhitespace(s[i])) {
          ++i;
          continue;
        }
        bool w = word(s[i]);
        size_t j = i;
        while (j < s.size() && !IsWhitespace(s[j]) && word(s[j]) == w) ++j;
        out.push_back({EncodeUtf8(Cps(s.begin() + i, s.begin() + j)), piece.first && i == 0});
        i = j;
      }
    }
    *pieces = std::move(out);
  } else if (type == "Punctuation") {
    std::string behavior = spec["behavior"].is_string() ? spec["behavior"].as_string() : "Isolated";
    // tokenizers' is_punc: ASCII punctuation or a Unicode P* character
    auto punct = [](uint32_t c) {
      return (c < 0x80 && std::ispunct(static_cast<int>(c))) || IsPunctuation(c);
    };
    SplitBy(pieces, punct, behavior);
  } else if (type == "Metaspace") {
    const std::string repl = spec["replacement"].is_string() ? spec["replacement"].as_string() : "\xE2\x96\x81";
    std::string scheme = spec["prepend_scheme"].is_string() ? spec["prepend_scheme"].as_string()
                         : (spec["add_prefix_space"].is_bool() && !spec["add_prefix_space"].as_bool()) ? "never"
                                                                                                      : "always";
    Cps r = DecodeUtf8(repl);
    for (Piece& piece : *pieces) {
      piece.text = ReplaceAll(piece.text, " ", repl);
      bool prepend = scheme == "always" || (scheme == "first" && piece.first);
      if (prepend && piece.text.compare(0, repl.size(), repl) != 0) piece.text = repl + piece.text;
    }
    bool split = !spec["split"].is_bool() || spec["split"].as_bool();
    if (split && r.size() == 1) {
      uint32_t rc = r[0];
      SplitBy(pieces, [rc](uint32_t c) { return c == rc; }, "MergedWithNext");
    }
  } else if (type == "ByteLevel") {
    bool prefix = spec["add_prefix_space"].as_bool();
    bool use_regex = !spec["use_regex"].is_bool() || spec["use_regex"].as_bool();
    for (Piece& piece : *pieces) {
      if (prefix && (piece.text.empty() || piece.text[0] != ' ')) piece.text = " " + piece.text;
    }
    if (use_regex) {
      std::vector<Piece> split;
      XSAM_RETURN_IF_ERROR(SplitRegex(kGpt2Pattern, *pieces, &split));
      *pieces = std::move(split);
    }
    for (Piece& piece : *pieces) {
      std::string mapped;
      for (unsigned char b : piece.text) AppendUtf8(ByteToUnicode(b), &mapped);
      piece.text = mapped;
    }
  } else if (type == "Split") {
    std::string behavior = spec["behavior"].as_string();
    if (spec["invert"].as_bool()) return Unsupported("tokenizer.json Split with invert=true is not implemented");
    if (spec["pattern"]["Regex"].is_string()) {
      if (behavior != "Isolated") return Unsupported("tokenizer.json regex Split other than Isolated");
      std::vector<Piece> split;
      XSAM_RETURN_IF_ERROR(SplitRegex(spec["pattern"]["Regex"].as_string(), *pieces, &split));
      *pieces = std::move(split);
    } else {
      Cps d = DecodeUtf8(spec["pattern"]["String"].as_string());
      if (d.size() != 1) return Unsupported("tokenizer.json Split on a multi-character string");
      uint32_t dc = d[0];
      SplitBy(pieces, [dc](uint32_t c) { return c == dc; }, behavior);
    }
  } else if (type == "Digits") {
    bool individual = spec["individual_digits"].as_bool();
    auto digit = [](uint32_t c) { return IsNumber(c); };
    SplitBy(pieces, digit, individual ? "Isolated" : "Contiguous");
  } else {
    return Unsupported("tokenizer.json pre-tokenizer '" + type + "' is not implemented in the native runtime");
  }
  return Status::Ok();
}

}  // namespace xsam
