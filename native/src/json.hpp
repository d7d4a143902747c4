// A small JSON value with a parser and a writer: enough for manifest.json, tokenizer.json, golden requests
// and the runner's output. Objects keep their key order (outputs read like the Python runtime's).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "status.hpp"

namespace xsam {

class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;

  Json() = default;
  Json(std::nullptr_t) {}
  Json(bool b) : type_(Type::kBool), bool_(b) {}
  Json(double d) : type_(Type::kNumber), number_(d) {}
  Json(int i) : type_(Type::kNumber), number_(i), integral_(true) {}
  Json(int64_t i) : type_(Type::kNumber), number_(static_cast<double>(i)), integral_(true) {}
  Json(size_t i) : type_(Type::kNumber), number_(static_cast<double>(i)), integral_(true) {}
  Json(const char* s) : type_(Type::kString), string_(s) {}
  Json(std::string s) : type_(Type::kString), string_(std::move(s)) {}
  Json(Array a) : type_(Type::kArray), array_(std::make_shared<Array>(std::move(a))) {}
  Json(Object o) : type_(Type::kObject), object_(std::make_shared<Object>(std::move(o))) {}

  static Json array() { return Json(Array{}); }
  static Json object() { return Json(Object{}); }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_integer() const;  // a number with no fractional part
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  bool as_bool() const { return bool_; }
  double as_double() const { return number_; }
  int64_t as_int() const { return static_cast<int64_t>(number_); }
  const std::string& as_string() const { return string_; }
  const Array& items() const;
  const Object& members() const;
  size_t size() const;

  // Object lookup: nullptr when absent (or when this is not an object).
  const Json* find(const std::string& key) const;
  // Array element / object member; a shared null when absent, so chains never crash.
  const Json& operator[](size_t i) const;
  const Json& operator[](const std::string& key) const;

  // Mutation (writer side).
  Json& push(Json v);
  Json& set(const std::string& key, Json v);

  static Status Parse(const std::string& text, Json* out);
  std::string dump(int indent = -1) const;

 private:
  void dump_to(std::string* out, int indent, int depth) const;

  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0;
  bool integral_ = false;
  std::string string_;
  std::shared_ptr<Array> array_;
  std::shared_ptr<Object> object_;
};

// Typed readers that turn a wrong or missing field into a status naming it.
Status GetInt(const Json& obj, const std::string& key, int64_t* out, const std::string& where);
Status GetString(const Json& obj, const std::string& key, std::string* out, const std::string& where);
Status GetDoubles(const Json& obj, const std::string& key, std::vector<double>* out,
                  const std::string& where);
Status GetInts(const Json& value, std::vector<int64_t>* out, const std::string& where);

// The text of a file, or kIo.
Status ReadFile(const std::string& path, std::string* out);
Status WriteFile(const std::string& path, const std::string& data);

}  // namespace xsam
