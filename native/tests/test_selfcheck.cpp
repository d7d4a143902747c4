// xsam_selfcheck through the C API on the fixture bundle: the golden vectors pass at the runner's tolerances;
// an impossible tolerance and a tampered golden copy fail with the difference reported; a bundle without
// golden vectors is XSAM_UNSUPPORTED; bad arguments are refused. Args: BUNDLE_DIR TMP_DIR.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "check.hpp"
#include "json.hpp"
#include "xsam/xsam.h"

namespace fs = std::filesystem;

namespace {

fs::path Copy(const fs::path& bundle, const fs::path& tmp, const std::string& name) {
  fs::path dst = tmp / name;
  fs::remove_all(dst);
  fs::create_directories(tmp);
  fs::copy(bundle, dst, fs::copy_options::recursive);
  return dst;
}

xsam_session* Open(const fs::path& bundle, int verify) {
  xsam_session* s = nullptr;
  xsam_status st = xsam_open(bundle.string().c_str(), verify, &s);
  CHECK(st == XSAM_OK && s, "open " + bundle.string() + ": " + xsam_last_error());
  return st == XSAM_OK ? s : nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: test_selfcheck BUNDLE_DIR TMP_DIR\n");
    return 2;
  }
  const fs::path bundle = argv[1], tmp = argv[2];

  xsam_session* s = Open(bundle, 1);
  if (!s) return finish("selfcheck C API");
  xsam_selfcheck_report r{};
  CHECK(xsam_selfcheck(s, 1e-3, 0.99, &r) == XSAM_OK, std::string("selfcheck: ") + xsam_last_error());
  std::printf("xsam_selfcheck: %zu requests, worst logit diff %.3g, worst mask IoU %.4f, passed %d\n", r.requests,
              r.worst_logit_diff, r.worst_mask_iou, r.passed);
  CHECK(r.passed == 1 && r.requests == 3, "the reference bundle's golden vectors pass");
  CHECK(r.worst_logit_diff <= 1e-3 && r.worst_mask_iou >= 0.99, "worst numbers within the tolerances");

  // an impossible tolerance: same numbers, a failed verdict
  xsam_selfcheck_report strict{};
  CHECK(xsam_selfcheck(s, 0.0, 1.01, &strict) == XSAM_OK, "a failed check is still XSAM_OK");
  CHECK(strict.passed == 0 && strict.requests == r.requests, "min IoU above 1 cannot pass");
  CHECK(strict.worst_mask_iou == r.worst_mask_iou, "the numbers do not depend on the tolerances");

  // the session still answers its own image afterwards
  const int h = 8, w = 8;
  uint8_t rgb[h * w * 3];
  for (int i = 0; i < h * w * 3; ++i) rgb[i] = static_cast<uint8_t>(i * 7);
  CHECK(xsam_set_image(s, rgb, h, w) == XSAM_OK, xsam_last_error());
  CHECK(xsam_selfcheck(s, 1e-3, 0.99, &r) == XSAM_OK && r.passed == 1, "selfcheck after set_image");
  xsam_request* req = xsam_request_new("interactive");
  xsam_request_add_point(req, 3, 3);
  xsam_result* out = nullptr;
  CHECK(xsam_segment(s, req, &out) == XSAM_OK && xsam_result_height(out) == h && xsam_result_width(out) == w,
        std::string("segment after selfcheck: ") + xsam_last_error());
  xsam_result_free(out);
  xsam_request_free(req);

  CHECK(xsam_selfcheck(s, -1.0, 0.99, &r) == XSAM_INVALID_ARGUMENT, "negative atol");
  CHECK(xsam_selfcheck(s, 1e-3, NAN, &r) == XSAM_INVALID_ARGUMENT, "NaN min_iou");
  CHECK(xsam_selfcheck(s, 1e-3, 0.99, nullptr) == XSAM_INVALID_ARGUMENT, "no report");
  CHECK(xsam_selfcheck(nullptr, 1e-3, 0.99, &r) == XSAM_INVALID_ARGUMENT, "no session");
  xsam_close(s);

  // a tampered golden copy: the referring text changed, so the stored logits no longer match
  fs::path d = Copy(bundle, tmp, "tampered_golden");
  std::ifstream in(d / "golden" / "requests.json");
  std::stringstream text;
  text << in.rdbuf();
  std::string doc = text.str();
  const std::string from = "\"the red circle\"", to = "\"the big square\"";  // same size: opens unverified
  size_t at = doc.find(from);
  CHECK(at != std::string::npos, "the golden requests hold a referring text");
  if (at != std::string::npos) {
    doc.replace(at, from.size(), to);
    std::ofstream(d / "golden" / "requests.json", std::ios::trunc) << doc;
    if ((s = Open(d, 0))) {
      xsam_selfcheck_report t{};
      CHECK(xsam_selfcheck(s, 1e-3, 0.99, &t) == XSAM_OK, xsam_last_error());
      std::printf("tampered golden: passed %d, worst logit diff %.3g\n", t.passed, t.worst_logit_diff);
      CHECK(t.passed == 0 && t.worst_logit_diff > 1e-3, "a tampered golden request fails the check");
      xsam_close(s);
    }
  }

  // no golden vectors at all
  d = Copy(bundle, tmp, "no_golden");
  fs::remove_all(d / "golden");
  std::string manifest_text;
  xsam::Json manifest;
  CHECK(xsam::ReadFile((d / "manifest.json").string(), &manifest_text).ok() &&
            xsam::Json::Parse(manifest_text, &manifest).ok(),
        "read the copy's manifest");
  xsam::Json files = xsam::Json::object();
  for (const auto& kv : manifest["files"].members()) {
    if (kv.first.rfind("golden/", 0) != 0) files.set(kv.first, kv.second);
  }
  manifest.set("files", files);
  manifest.set("golden", xsam::Json::array());
  std::ofstream(d / "manifest.json", std::ios::trunc) << manifest.dump(2);
  if ((s = Open(d, 0))) {
    CHECK(xsam_selfcheck(s, 1e-3, 0.99, &r) == XSAM_UNSUPPORTED, "a bundle without golden vectors");
    CHECK(std::string(xsam_last_error()).find("no golden vectors") != std::string::npos, xsam_last_error());
    xsam_close(s);
  }
  return finish("selfcheck C API");
}
