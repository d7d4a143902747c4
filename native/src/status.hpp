// Status values instead of exceptions or aborts: every fallible call of the core returns one, and the
// message names the bad value and the fix, as the Python runtime's ValueError / BundleError messages do.
#pragma once

#include <string>
#include <utility>

namespace xsam {

enum class Code {
  kOk = 0,
  kInvalidArgument = 1,  // bad user input (request fields, image, prompt)
  kBundle = 2,           // bundle unusable: schema, checksum, confinement, missing file
  kRuntime = 3,          // ExecuTorch refused to load or run a graph
  kOrder = 4,            // calls in the wrong order (segment before open)
  kUnsupported = 5,      // a manifest feature this core does not implement (named in the message)
  kIo = 6,               // a file could not be read or written
};

class Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return {}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
inline Status BundleError(std::string m) { return {Code::kBundle, std::move(m)}; }
inline Status RuntimeError(std::string m) { return {Code::kRuntime, std::move(m)}; }
inline Status Unsupported(std::string m) { return {Code::kUnsupported, std::move(m)}; }
inline Status IoError(std::string m) { return {Code::kIo, std::move(m)}; }

// Return early from the calling function when a Status is not ok.
#define XSAM_RETURN_IF_ERROR(expr)          \
  do {                                      \
    ::xsam::Status _xsam_status = (expr);   \
    if (!_xsam_status.ok()) return _xsam_status; \
  } while (0)

}  // namespace xsam
