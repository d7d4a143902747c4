#include "unicode.hpp"

#include <algorithm>

namespace xsam {
namespace {

struct CodeRange {
  uint32_t first, last;
};

struct LowerEntry {
  uint32_t cp;
  uint32_t lower[3];
  int n;
};

#include "unicode_tables.inc"

template <size_t N>
bool InRanges(const CodeRange (&table)[N], uint32_t cp) {
  auto it = std::upper_bound(std::begin(table), std::end(table), cp,
                             [](uint32_t v, const CodeRange& r) { return v < r.first; });
  return it != std::begin(table) && cp <= (it - 1)->last;
}

}  // namespace

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::vector<uint32_t> DecodeUtf8(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    uint32_t cp = n == 1 ? c : c & (0x7F >> n);
    bool ok = true;
    for (int k = 1; k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      ok = ok && (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += n;
  }
  return out;
}

bool ValidUtf8(const std::string& s) {
  std::string round;
  for (uint32_t cp : DecodeUtf8(s)) AppendUtf8(cp, &round);
  return round == s;
}

std::string EncodeUtf8(const std::vector<uint32_t>& cps) {
  std::string out;
  for (uint32_t cp : cps) AppendUtf8(cp, &out);
  return out;
}

bool IsWhitespace(uint32_t cp) {
  return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

bool IsPythonSpace(uint32_t cp) { return IsWhitespace(cp) || (cp >= 0x1C && cp <= 0x1F); }
bool IsLetter(uint32_t cp) { return InRanges(kLetters, cp); }
bool IsNumber(uint32_t cp) { return InRanges(kNumbers, cp); }
bool IsPunctuation(uint32_t cp) { return InRanges(kPunctuation, cp); }
bool NfcSafe(uint32_t cp) { return !InRanges(kNfcUnsafe, cp); }

std::string ToLower(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (uint32_t cp : DecodeUtf8(s)) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
      continue;
    }
    auto it = std::lower_bound(std::begin(kLower), std::end(kLower), cp,
                               [](const LowerEntry& e, uint32_t v) { return e.cp < v; });
    if (it != std::end(kLower) && it->cp == cp) {
      for (int k = 0; k < it->n; ++k) AppendUtf8(it->lower[k], &out);
    } else {
      AppendUtf8(cp, &out);
    }
  }
  return out;
}

}  // namespace xsam
