// The native core against the Python runtime (EdgeSession) on requests of every task: same labels and label ids,
// scores within 1e-3, every mask IoU >= 0.99, same text, and the same LLM rows run (a short prefill unpadded where
// the bundle's prefill is dynamic). Data: native/tools/dump_reference.py OUT/parity.
#include <cmath>
#include <memory>

#include "check.hpp"
#include "golden.hpp"
#include "xsam/session.hpp"

using namespace xsam;

namespace {

std::vector<uint8_t> Unrle(const Json& runs, size_t n) {
  std::vector<uint8_t> mask;
  uint8_t v = 0;
  for (const Json& r : runs.items()) {
    mask.insert(mask.end(), static_cast<size_t>(r.as_int()), v);
    v = !v;
  }
  mask.resize(n, 0);
  return mask;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::printf("usage: test_parity BUNDLE PARITY_DIR\n");
    return 2;
  }
  std::unique_ptr<Session> session;
  Status st = Session::Open(argv[1], SessionOptions(), &session);
  CHECK_OK(st);
  if (!st.ok()) return finish("parity");
  const std::string dir = argv[2];
  std::string text;
  Json requests, expected;
  CHECK_OK(ReadFile(dir + "/requests.json", &text));
  CHECK_OK(Json::Parse(text, &requests));
  CHECK_OK(ReadFile(dir + "/expected.json", &text));
  CHECK_OK(Json::Parse(text, &expected));
  const Json& want_all = expected["answers"];
  CHECK(requests["requests"].size() == want_all.size() && want_all.size() > 0, "request / answer counts");
  double worst_iou = 1, worst_score = 0;
  for (size_t i = 0; i < want_all.size(); ++i) {
    Request request;
    Result got;
    CHECK_OK(RequestFromJson(requests["requests"][i], dir, &request));
    const int64_t rows_before = session->engine().llm_rows();
    st = session->Segment(request, &got);
    CHECK_OK(st);
    if (!st.ok()) continue;
    const Json& want = want_all[i];
    const std::string what = "request " + std::to_string(i) + " (" + TaskName(request.task) + ")";
    const int64_t rows = session->engine().llm_rows() - rows_before;
    CHECK(rows == want["llm_rows"].as_int(), what + ": " + std::to_string(rows) + " LLM rows, Python " +
                                                 std::to_string(want["llm_rows"].as_int()));
    size_t n = static_cast<size_t>(got.height) * got.width;
    CHECK(got.height == want["height"].as_int() && got.width == want["width"].as_int(), what + ": size");
    CHECK(got.masks.size() == want["labels"].size(),
          what + ": " + std::to_string(got.masks.size()) + " masks, Python " + std::to_string(want["labels"].size()));
    CHECK(got.has_text == want["text"].is_string(), what + ": text presence");
    if (got.has_text && want["text"].is_string()) {
      CHECK(got.text == want["text"].as_string(), what + ": text '" + got.text + "' != '" + want["text"].as_string() + "'");
    }
    for (size_t m = 0; m < std::min(got.masks.size(), want["labels"].size()); ++m) {
      CHECK(got.labels[m] == want["labels"][m].as_string(), what + ": label " + got.labels[m]);
      CHECK(got.label_ids[m] == want["label_ids"][m].as_int(), what + ": label id");
      double ds = std::fabs(got.scores[m] - want["scores"][m].as_double());
      worst_score = std::fmax(worst_score, ds);
      CHECK(ds <= 1e-3, what + ": score differs by " + std::to_string(ds));
      std::vector<uint8_t> ref = Unrle(want["rle"][m], n);
      size_t inter = 0, uni = 0;
      for (size_t p = 0; p < n; ++p) {
        inter += got.masks[m][p] && ref[p];
        uni += got.masks[m][p] || ref[p];
      }
      double iou = uni ? static_cast<double>(inter) / uni : 1.0;
      worst_iou = std::fmin(worst_iou, iou);
      CHECK(iou >= 0.99, what + ": mask " + std::to_string(m) + " IoU " + std::to_string(iou));
    }
    std::printf("%-32s masks %zu  %s\n", what.c_str(), got.masks.size(), got.has_text ? got.text.substr(0, 40).c_str() : "");
  }
  std::printf("parity vs EdgeSession: %zu requests, worst mask IoU %.4f, worst score difference %.2e\n",
              want_all.size(), worst_iou, worst_score);
  return finish("parity");
}
