// UTF-8 and the few Unicode properties tokenizers read (tables generated from unicodedata).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace xsam {

std::vector<uint32_t> DecodeUtf8(const std::string& s);  // invalid bytes decode as U+FFFD
std::string EncodeUtf8(const std::vector<uint32_t>& cps);
void AppendUtf8(uint32_t cp, std::string* out);
bool ValidUtf8(const std::string& s);

bool IsWhitespace(uint32_t cp);   // Unicode White_Space (Rust char::is_whitespace, regex \s)
bool IsPythonSpace(uint32_t cp);  // str.isspace(): White_Space plus U+001C..U+001F
bool IsLetter(uint32_t cp);       // \p{L}
bool IsNumber(uint32_t cp);       // \p{N}
bool IsPunctuation(uint32_t cp);  // \p{P}
bool NfcSafe(uint32_t cp);        // a text of only such code points is already in NFC
std::string ToLower(const std::string& s);  // full lowercase mapping per code point

}  // namespace xsam
