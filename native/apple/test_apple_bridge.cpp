// The iOS bridge's C++ side on Linux: BridgeSession (C API as C++ values) gives exactly what the core's C++
// Session gives on the reference requests that the demo can express (no mask prompts), reports failures with
// the core's status and message, its self-check reports what the core's RunSelfCheck reports, and the drawing maths matches spec/image_io.py (palette from a file the
// Python test writes) and the placement rules of spec's annotate.
//   test_apple_bridge BUNDLE PARITY_DIR PALETTE_FILE      (PALETTE_FILE: "r g b" lines of spec's palette(n))
#include <cmath>
#include <cstdio>
#include <fstream>

#include "../tests/check.hpp"
#include "bridge_session.hpp"
#include "gestures.hpp"
#include "golden.hpp"
#include "overlay_math.hpp"
#include "selfcheck.hpp"
#include "xsam/session.hpp"

using namespace xsam_apple;

namespace {

// The demo's request for a core request, or false when it has a prompt the demo cannot draw (a mask).
bool ToBridge(const xsam::Request& in, BridgeRequest* out) {
  out->task = xsam::TaskName(in.task);
  out->has_text = in.has_text;
  out->text = in.text;
  out->categories = in.categories;
  for (const xsam::Prompt& p : in.prompts) {
    BridgePrompt q;
    if (p.kind == xsam::Prompt::Kind::kMask) return false;
    if (p.kind == xsam::Prompt::Kind::kBox) {
      q.kind = BridgePrompt::Kind::kBox;
      q.xy.assign(p.box, p.box + 4);
    } else {
      q.kind = p.kind == xsam::Prompt::Kind::kPoint ? BridgePrompt::Kind::kPoint : BridgePrompt::Kind::kScribble;
      for (const auto& xy : p.points) q.xy.insert(q.xy.end(), {xy.first, xy.second});
    }
    out->prompts.push_back(q);
  }
  return true;
}

void CheckSameAnswer(const xsam::Result& want, const BridgeAnswer& got, const std::string& what) {
  CHECK(got.height == want.height && got.width == want.width, what + ": size");
  CHECK(got.segments.size() == want.masks.size(), what + ": mask count");
  for (size_t m = 0; m < std::min(got.segments.size(), want.masks.size()); ++m) {
    const BridgeSegment& s = got.segments[m];
    CHECK(s.mask == want.masks[m], what + ": mask " + std::to_string(m));
    CHECK(s.label == want.labels[m] && s.label_id == want.label_ids[m], what + ": label " + s.label);
    CHECK(s.score == want.scores[m], what + ": score");
  }
  CHECK(got.has_text == want.has_text && got.text == want.text, what + ": text");
}

int ParityWithTheCore(const std::string& bundle, const std::string& dir) {
  std::string text;
  xsam::Json requests;
  CHECK_OK(xsam::ReadFile(dir + "/requests.json", &text));
  CHECK_OK(xsam::Json::Parse(text, &requests));
  std::unique_ptr<xsam::Session> core;
  CHECK_OK(xsam::Session::Open(bundle, xsam::SessionOptions(), &core));
  BridgeError error;
  std::unique_ptr<BridgeSession> bridge = BridgeSession::Open(bundle, true, &error);
  CHECK(bridge && core, "open: " + error.message);
  if (!bridge || !core) return 0;
  int compared = 0;
  bool image_set = false;
  for (size_t i = 0; i < requests["requests"].size(); ++i) {
    xsam::Request request;
    BridgeRequest asked;
    CHECK_OK(xsam::RequestFromJson(requests["requests"][i], dir, &request));
    if (!ToBridge(request, &asked)) continue;
    if (!image_set) {
      const xsam::Image& im = request.image;
      CHECK(bridge->SetImage(im.data.data(), im.height, im.width, &error), "set image: " + error.message);
      image_set = true;
    }
    xsam::Result want;
    BridgeAnswer got;
    CHECK_OK(core->Segment(request, &want));
    const std::string what = "request " + std::to_string(i) + " (" + asked.task + ")";
    CHECK(bridge->Segment(asked, &got, &error), what + ": " + error.message);
    CheckSameAnswer(want, got, what);
    ++compared;
  }
  return compared;
}

void FailuresComeBackWithTheCoreMessage(const std::string& bundle) {
  BridgeError error;
  CHECK(!BridgeSession::Open(bundle + "/no-such-folder", true, &error), "opened a missing bundle");
  CHECK((error.status == XSAM_BUNDLE_ERROR || error.status == XSAM_IO_ERROR) &&
            error.message.find("no-such-folder") != std::string::npos,
        "missing bundle: " + error.message);
  std::unique_ptr<BridgeSession> s = BridgeSession::Open(bundle, false, &error);
  CHECK(s != nullptr, "open without checksums: " + error.message);
  if (!s) return;
  BridgeRequest referring;
  referring.has_text = true;
  referring.text = "the red circle";
  BridgeAnswer answer;
  CHECK(!s->Segment(referring, &answer, &error) && error.status == XSAM_ORDER_ERROR, "segment before an image");
  const uint8_t grey[2 * 2 * 3] = {128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128};
  CHECK(s->SetImage(grey, 2, 2, &error), "a 2x2 image: " + error.message);
  BridgeRequest unknown;
  unknown.task = "segment everything";
  CHECK(!s->Segment(unknown, &answer, &error) && error.status == XSAM_INVALID_ARGUMENT &&
            error.message.find("referring") != std::string::npos,
        "unknown task: " + error.message);
  BridgeRequest odd;
  odd.task = "interactive";
  odd.prompts.push_back({BridgePrompt::Kind::kBox, {1, 2, 3}});
  CHECK(!s->Segment(odd, &answer, &error) && error.status == XSAM_INVALID_ARGUMENT, "a box of three numbers");
  odd.prompts = {{BridgePrompt::Kind::kScribble, {}}};
  CHECK(!s->Segment(odd, &answer, &error) && error.message.find("scribble") != std::string::npos,
        "an empty scribble: " + error.message);
}

// The bridge's self-check against the core's C++ RunSelfCheck on the same bundle: same numbers, a pass at the
// runner's tolerances, a fail at impossible ones, a refusal of a negative atol.
void SelfCheckMatchesTheCore(const std::string& bundle) {
  std::unique_ptr<xsam::Session> core;
  CHECK_OK(xsam::Session::Open(bundle, xsam::SessionOptions(), &core));
  if (!core) return;
  xsam::SelfCheckReport want;
  CHECK_OK(xsam::RunSelfCheck(*core, 1e-3, 0.99, &want));
  BridgeError error;
  std::unique_ptr<BridgeSession> s = BridgeSession::Open(bundle, true, &error);
  CHECK(s != nullptr, "open: " + error.message);
  if (!s) return;
  BridgeSelfCheck got;
  CHECK(s->SelfCheck(1e-3, 0.99, &got, &error), "selfcheck: " + error.message);
  std::printf("bridge selfcheck: %s, %zu golden requests, worst logit difference %.3g, worst mask IoU %.4f\n",
              got.passed ? "PASS" : "FAIL", got.requests, got.worst_logit_diff, got.worst_mask_iou);
  CHECK(got.passed && want.passed && got.requests == want.requests && got.requests > 0, "golden vectors pass");
  CHECK(got.worst_logit_diff == want.worst_logit_diff && got.worst_mask_iou == want.worst_mask_iou,
        "the bridge reports the core's numbers");
  CHECK(got.atol == 1e-3 && got.min_iou == 0.99, "the tolerances come back");
  BridgeSelfCheck strict;
  CHECK(s->SelfCheck(0.0, 1.01, &strict, &error) && !strict.passed, "min IoU above 1 cannot pass");
  CHECK(!s->SelfCheck(-1.0, 0.99, &strict, &error) && error.status == XSAM_INVALID_ARGUMENT &&
            error.message.find("atol") != std::string::npos,
        "a negative atol is refused: " + error.message);
}

void DrawingMaths(const std::string& palette_file) {
  std::ifstream in(palette_file);
  int r, g, b, n = 0;
  while (in >> r >> g >> b) {
    CHECK(PaletteRgb(static_cast<size_t>(n)) == static_cast<uint32_t>((r << 16) | (g << 8) | b),
          "palette colour " + std::to_string(n));
    ++n;
  }
  CHECK(n >= 8, "the palette file holds " + std::to_string(n) + " colours");

  Fit fit = FitCentered(80, 48, 400, 400);  // scale 5, bars of 80 points above and below
  double x = -1, y = -1, vx = 0, vy = 0;
  CHECK(fit.scale == 5 && fit.offset_x == 0 && fit.offset_y == 80, "fit");
  CHECK(ViewToImage(fit, 200, 200, &x, &y) && x == 40 && y == 24, "tap in the middle");
  CHECK(!ViewToImage(fit, 200, 40, &x, &y), "tap on the bar");
  ViewToImageClamped(fit, 500, -10, &x, &y);
  CHECK(x == 80 && y == 0, "clamped drag end");
  ImageToView(fit, 40, 24, &vx, &vy);
  CHECK(vx == 200 && vy == 200, "image to view");

  const uint8_t a[6] = {1, 1, 0, 0, 0, 0}, b2[6] = {0, 1, 1, 0, 0, 0};
  std::vector<uint8_t> layer = MaskLayerRgba({a, b2}, 2, 3, 0.5f);
  uint32_t c1 = PaletteRgb(1);
  CHECK(layer[0] == 128 && layer[1] == 0 && layer[2] == 0 && layer[3] == 128, "red at half alpha, premultiplied");
  CHECK(layer[4] == ((c1 >> 16) & 0xFF) * 128 / 255 && layer[7] == 128, "later mask on top");
  CHECK(layer[12] == 0 && layer[15] == 0, "transparent outside");

  std::array<int, 4> box{};
  uint8_t mask[4 * 5] = {};
  mask[1 * 5 + 2] = mask[3 * 5 + 4] = 1;
  CHECK(BoundingBox(mask, 4, 5, &box) && box == (std::array<int, 4>{2, 1, 5, 4}), "bounding box");
  uint8_t empty[4] = {};
  CHECK(!BoundingBox(empty, 2, 2, &box), "empty mask");
  CHECK((LabelCorner({10, 20, 30, 40}, 50, 12, 100, 80) == std::array<int, 2>{10, 8}), "label above");
  CHECK((LabelCorner({90, 5, 99, 40}, 50, 12, 100, 80) == std::array<int, 2>{50, 0}), "label kept inside");
  CHECK(Caption("sky", 0.2501f) == "sky \xc2\xb7 0.25", "caption");
  CHECK(InkOn(0xFFFF00) == 0 && InkOn(0x0000BF) == 0xFFFFFF, "ink");
}

void GesturesToPrompts() {
  Fit fit = FitCentered(80, 48, 400, 400);
  BridgePrompt p;
  const std::vector<std::array<double, 2>> path = {{50, 100}, {75, 120}, {100, 140}};
  CHECK(PromptFromGesture(fit, GestureMode::kPoint, path, &p) && p.kind == BridgePrompt::Kind::kPoint &&
            p.xy == (std::vector<double>{20, 12}),
        "tap -> point at the last touch");
  CHECK(!PromptFromGesture(fit, GestureMode::kPoint, {{200, 40}}, &p), "tap on the bar");
  CHECK(PromptFromGesture(fit, GestureMode::kBox, {{100, 140}, {50, 100}}, &p) &&
            p.xy == (std::vector<double>{10, 4, 20, 12}),
        "drag up-left -> box");
  CHECK(PromptFromGesture(fit, GestureMode::kBox, {{350, 0}, {500, 400}}, &p) &&
            p.xy == (std::vector<double>{70, 0, 80, 48}),
        "drag off the image -> clamped box");
  CHECK(!PromptFromGesture(fit, GestureMode::kBox, {{100, 100}, {102, 140}}, &p), "a box under a pixel wide");
  CHECK(PromptFromGesture(fit, GestureMode::kScribble, {{0, 80}, {2, 80}, {5, 80}, {5, 90}, {-50, 0}}, &p) &&
            p.xy == (std::vector<double>{0, 0, 1, 0, 1, 2, 0, 0}),
        "scribble thinned and clamped");
  CHECK(!PromptFromGesture(fit, GestureMode::kScribble, {}, &p), "no touches");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::printf("usage: test_apple_bridge BUNDLE PARITY_DIR PALETTE_FILE\n");
    return 2;
  }
  int compared = ParityWithTheCore(argv[1], argv[2]);
  CHECK(compared >= 10, "only " + std::to_string(compared) + " requests compared");
  std::printf("bridge vs core: %d requests identical\n", compared);
  FailuresComeBackWithTheCoreMessage(argv[1]);
  SelfCheckMatchesTheCore(argv[1]);
  DrawingMaths(argv[3]);
  GesturesToPrompts();
  return finish("apple_bridge");
}
