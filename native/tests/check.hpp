// A few lines of test harness: CHECK records a failure with its place and keeps going; main returns the count.
#pragma once

#include <cstdio>
#include <string>

namespace xsam_test {
inline int& failures() {
  static int n = 0;
  return n;
}
inline void fail(const char* file, int line, const std::string& what) {
  ++failures();
  std::printf("FAIL %s:%d: %s\n", file, line, what.c_str());
}
}  // namespace xsam_test

#define CHECK(cond, what)                                              \
  do {                                                                 \
    if (!(cond)) xsam_test::fail(__FILE__, __LINE__, std::string(what)); \
  } while (0)

#define CHECK_OK(status)                                                              \
  do {                                                                                \
    ::xsam::Status _s = (status);                                                     \
    if (!_s.ok()) xsam_test::fail(__FILE__, __LINE__, "status: " + _s.message());     \
  } while (0)

inline int finish(const char* name) {
  std::printf("%s: %s (%d failure%s)\n", name, xsam_test::failures() ? "FAILED" : "passed", xsam_test::failures(),
              xsam_test::failures() == 1 ? "" : "s");
  return xsam_test::failures() ? 1 : 0;
}
