// The C API (xsam.h) as C++ values for the iOS demo's Objective-C++ bridge (ios_demo/XSamDemo/Bridge): RAII
// handles, a request as plain data, the answer copied out, every failure as {status, message}. Only what
// Objective-C types cannot hold stays in XSamBridge.mm (NSString / NSData / UIImage conversion), so the logic
// builds and is tested on Linux against the real core (tests/test_ios_demo.py).
#ifndef XSAM_APPLE_BRIDGE_SESSION_HPP_
#define XSAM_APPLE_BRIDGE_SESSION_HPP_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "xsam/xsam.h"

namespace xsam_apple {

struct BridgeError {
  int status = XSAM_OK;
  std::string message;
};

// A visual prompt in image pixels. Requests keep prompts in order: the answer labels them "prompt 0", ...
struct BridgePrompt {
  enum class Kind { kPoint, kBox, kScribble };
  Kind kind = Kind::kPoint;
  std::vector<double> xy;  // point: x, y; box: x0, y0, x1, y1; scribble: x0, y0, x1, y1, ...
};

struct BridgeRequest {
  std::string task = "referring";  // the names of xsam_request_new
  bool has_text = false;
  std::string text;
  std::vector<std::string> categories;
  std::vector<BridgePrompt> prompts;
};

struct BridgeSegment {
  std::vector<uint8_t> mask;  // height * width, 1 inside
  std::string label;
  int64_t label_id = -1;
  float score = 0;
};

struct BridgeAnswer {
  int height = 0;
  int width = 0;
  std::vector<BridgeSegment> segments;
  bool has_text = false;
  std::string text;
};

// xsam_selfcheck_report with the tolerances it was run at.
struct BridgeSelfCheck {
  size_t requests = 0;
  double worst_logit_diff = 0;
  double worst_mask_iou = 1;
  bool passed = false;
  double atol = 0;
  double min_iou = 0;
};

// One opened bundle. Not thread-safe (one serial queue per session: the core keeps one image's state and its
// last error is per thread).
class BridgeSession {
 public:
  static std::unique_ptr<BridgeSession> Open(const std::string& bundle_dir, bool verify_checksums,
                                             BridgeError* error);
  ~BridgeSession();
  BridgeSession(const BridgeSession&) = delete;
  BridgeSession& operator=(const BridgeSession&) = delete;

  // (height, width, 3) RGB bytes, row-major.
  bool SetImage(const uint8_t* rgb, int height, int width, BridgeError* error);
  bool Segment(const BridgeRequest& request, BridgeAnswer* answer, BridgeError* error);
  // The bundle's golden vectors (xsam_selfcheck): true with *report filled whether or not they passed; false
  // for a bundle without golden vectors (XSAM_UNSUPPORTED), bad tolerances or a failed run.
  bool SelfCheck(double atol, double min_iou, BridgeSelfCheck* report, BridgeError* error);

 private:
  explicit BridgeSession(xsam_session* session) : session_(session) {}
  xsam_session* session_;
};

}  // namespace xsam_apple

#endif  // XSAM_APPLE_BRIDGE_SESSION_HPP_
