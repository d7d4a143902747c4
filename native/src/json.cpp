#include "json.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace xsam {
namespace {

const Json& NullJson() {
  static const Json kNull;
  return kNull;
}

const Json::Array& EmptyArray() {
  static const Json::Array kEmpty;
  return kEmpty;
}

const Json::Object& EmptyObject() {
  static const Json::Object kEmpty;
  return kEmpty;
}

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

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  Status Run(Json* out) {
    XSAM_RETURN_IF_ERROR(Value(out, 0));
    Skip();
    if (pos_ != s_.size()) return Error("trailing characters");
    return Status::Ok();
  }

 private:
  Status Error(const std::string& what) const {
    return InvalidArgument("invalid JSON at byte " + std::to_string(pos_) + ": " + what);
  }

  void Skip() {
    while (pos_ < s_.size() && std::strchr(" \t\r\n", s_[pos_]) != nullptr && s_[pos_] != '\0') ++pos_;
  }

  bool Literal(const char* word) {
    size_t n = std::strlen(word);
    if (s_.compare(pos_, n, word) != 0) return false;
    pos_ += n;
    return true;
  }

  Status Value(Json* out, int depth) {
    if (depth > 200) return Error("nesting too deep");
    Skip();
    if (pos_ >= s_.size()) return Error("unexpected end");
    char c = s_[pos_];
    if (c == '{') return ObjectValue(out, depth);
    if (c == '[') return ArrayValue(out, depth);
    if (c == '"') {
      std::string str;
      XSAM_RETURN_IF_ERROR(String(&str));
      *out = Json(std::move(str));
      return Status::Ok();
    }
    if (Literal("true")) {
      *out = Json(true);
      return Status::Ok();
    }
    if (Literal("false")) {
      *out = Json(false);
      return Status::Ok();
    }
    if (Literal("null")) {
      *out = Json();
      return Status::Ok();
    }
    // Python's json writes NaN / Infinity for non-finite floats; accept them as numbers.
    if (Literal("NaN")) {
      *out = Json(std::nan(""));
      return Status::Ok();
    }
    if (Literal("Infinity")) {
      *out = Json(HUGE_VAL);
      return Status::Ok();
    }
    if (Literal("-Infinity")) {
      *out = Json(-HUGE_VAL);
      return Status::Ok();
    }
    return Number(out);
  }

  Status Number(Json* out) {
    size_t start = pos_;
    bool integral = true;
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c >= '0' && c <= '9') {
        ++pos_;
      } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
        integral = false;
        ++pos_;
      } else {
        break;
      }
    }
    if (pos_ == start) return Error("unexpected character");
    std::string token = s_.substr(start, pos_ - start);
    char* end = nullptr;
    double v = std::strtod(token.c_str(), &end);
    if (end == nullptr || *end != '\0') return Error("bad number '" + token + "'");
    *out = integral ? Json(static_cast<int64_t>(std::strtoll(token.c_str(), nullptr, 10))) : Json(v);
    return Status::Ok();
  }

  Status Hex4(uint32_t* cp) {
    if (pos_ + 4 > s_.size()) return Error("short \\u escape");
    *cp = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_++];
      *cp <<= 4;
      if (c >= '0' && c <= '9') *cp |= c - '0';
      else if (c >= 'a' && c <= 'f') *cp |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') *cp |= c - 'A' + 10;
      else return Error("bad \\u escape");
    }
    return Status::Ok();
  }

  Status String(std::string* out) {
    ++pos_;  // opening quote
    while (pos_ < s_.size()) {
      char c = s_[pos_++];
      if (c == '"') return Status::Ok();
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (pos_ >= s_.size()) break;
      char e = s_[pos_++];
      switch (e) {
        case '"': out->push_back('"'); break;
        case '\\': out->push_back('\\'); break;
        case '/': out->push_back('/'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          XSAM_RETURN_IF_ERROR(Hex4(&cp));
          // a UTF-16 surrogate pair spells one code point above U+FFFF
          if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(pos_, 2, "\\u") == 0) {
            pos_ += 2;
            uint32_t low = 0;
            XSAM_RETURN_IF_ERROR(Hex4(&low));
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          AppendUtf8(cp, out);
          break;
        }
        default: return Error("bad escape");
      }
    }
    return Error("unterminated string");
  }

  Status ArrayValue(Json* out, int depth) {
    ++pos_;
    Json::Array items;
    Skip();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      *out = Json(std::move(items));
      return Status::Ok();
    }
    while (true) {
      Json v;
      XSAM_RETURN_IF_ERROR(Value(&v, depth + 1));
      items.push_back(std::move(v));
      Skip();
      if (pos_ >= s_.size()) return Error("unterminated array");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == ']') {
        ++pos_;
        *out = Json(std::move(items));
        return Status::Ok();
      }
      return Error("expected , or ]");
    }
  }

  Status ObjectValue(Json* out, int depth) {
    ++pos_;
    Json::Object members;
    Skip();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      *out = Json(std::move(members));
      return Status::Ok();
    }
    while (true) {
      Skip();
      if (pos_ >= s_.size() || s_[pos_] != '"') return Error("expected a key");
      std::string key;
      XSAM_RETURN_IF_ERROR(String(&key));
      Skip();
      if (pos_ >= s_.size() || s_[pos_] != ':') return Error("expected :");
      ++pos_;
      Json v;
      XSAM_RETURN_IF_ERROR(Value(&v, depth + 1));
      members.emplace_back(std::move(key), std::move(v));
      Skip();
      if (pos_ >= s_.size()) return Error("unterminated object");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == '}') {
        ++pos_;
        *out = Json(std::move(members));
        return Status::Ok();
      }
      return Error("expected , or }");
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
};

void Escape(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          *out += buf;
        } else {
          out->push_back(static_cast<char>(c));  // UTF-8 passes through
        }
    }
  }
  out->push_back('"');
}

}  // namespace

bool Json::is_integer() const { return type_ == Type::kNumber && std::floor(number_) == number_; }

const Json::Array& Json::items() const { return array_ ? *array_ : EmptyArray(); }
const Json::Object& Json::members() const { return object_ ? *object_ : EmptyObject(); }

size_t Json::size() const {
  if (type_ == Type::kArray) return array_->size();
  if (type_ == Type::kObject) return object_->size();
  return 0;
}

const Json* Json::find(const std::string& key) const {
  if (type_ != Type::kObject) return nullptr;
  for (const auto& kv : *object_) {
    if (kv.first == key) return &kv.second;
  }
  return nullptr;
}

const Json& Json::operator[](size_t i) const {
  if (type_ != Type::kArray || i >= array_->size()) return NullJson();
  return (*array_)[i];
}

const Json& Json::operator[](const std::string& key) const {
  const Json* v = find(key);
  return v ? *v : NullJson();
}

Json& Json::push(Json v) {
  if (type_ != Type::kArray) *this = array();
  array_->push_back(std::move(v));
  return array_->back();
}

Json& Json::set(const std::string& key, Json v) {
  if (type_ != Type::kObject) *this = object();
  for (auto& kv : *object_) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return kv.second;
    }
  }
  object_->emplace_back(key, std::move(v));
  return object_->back().second;
}

Status Json::Parse(const std::string& text, Json* out) { return Parser(text).Run(out); }

std::string Json::dump(int indent) const {
  std::string out;
  dump_to(&out, indent, 0);
  return out;
}

void Json::dump_to(std::string* out, int indent, int depth) const {
  auto newline = [&](int d) {
    if (indent < 0) return;
    out->push_back('\n');
    out->append(static_cast<size_t>(indent * d), ' ');
  };
  switch (type_) {
    case Type::kNull: *out += "null"; break;
    case Type::kBool: *out += bool_ ? "true" : "false"; break;
    case Type::kNumber: {
      char buf[40];
      if (!std::isfinite(number_)) {
        *out += "null";  // JSON has no NaN / infinity
      } else if (integral_ || (is_integer() && std::fabs(number_) < 1e15)) {
        std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(number_));
        *out += buf;
      } else {
        std::snprintf(buf, sizeof buf, "%.9g", number_);
        *out += buf;
      }
      break;
    }
    case Type::kString: Escape(string_, out); break;
    case Type::kArray: {
      out->push_back('[');
      for (size_t i = 0; i < array_->size(); ++i) {
        if (i) out->push_back(',');
        newline(depth + 1);
        (*array_)[i].dump_to(out, indent, depth + 1);
      }
      if (!array_->empty()) newline(depth);
      out->push_back(']');
      break;
    }
    case Type::kObject: {
      out->push_back('{');
      for (size_t i = 0; i < object_->size(); ++i) {
        if (i) out->push_back(',');
        newline(depth + 1);
        Escape((*object_)[i].first, out);
        *out += indent < 0 ? ":" : ": ";
        (*object_)[i].second.dump_to(out, indent, depth + 1);
      }
      if (!object_->empty()) newline(depth);
      out->push_back('}');
      break;
    }
  }
}

Status GetInt(const Json& obj, const std::string& key, int64_t* out, const std::string& where) {
  const Json* v = obj.find(key);
  if (!v || !v->is_integer()) return BundleError(where + ": '" + key + "' must be an integer");
  *out = v->as_int();
  return Status::Ok();
}

Status GetString(const Json& obj, const std::string& key, std::string* out, const std::string& where) {
  const Json* v = obj.find(key);
  if (!v || !v->is_string()) return BundleError(where + ": '" + key + "' must be a string");
  *out = v->as_string();
  return Status::Ok();
}

Status GetDoubles(const Json& obj, const std::string& key, std::vector<double>* out,
                  const std::string& where) {
  const Json* v = obj.find(key);
  if (!v || !v->is_array()) return BundleError(where + ": '" + key + "' must be a list of numbers");
  out->clear();
  for (const Json& x : v->items()) {
    if (!x.is_number()) return BundleError(where + ": '" + key + "' must be a list of numbers");
    out->push_back(x.as_double());
  }
  return Status::Ok();
}

Status GetInts(const Json& value, std::vector<int64_t>* out, const std::string& where) {
  if (!value.is_array()) return BundleError(where + " must be a list of integers");
  out->clear();
  for (const Json& x : value.items()) {
    if (!x.is_integer()) return BundleError(where + " must be a list of integers");
    out->push_back(x.as_int());
  }
  return Status::Ok();
}

Status ReadFile(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return IoError("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return Status::Ok();
}

Status WriteFile(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return IoError("cannot write " + path);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  return f ? Status::Ok() : IoError("failed writing " + path);
}

}  // namespace xsam
