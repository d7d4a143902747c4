#include "selfcheck.hpp"

#include <algorithm>
#include <cmath>

#include "golden.hpp"
#include "xsam/session.hpp"

namespace xsam {

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::fmax(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
  return worst;
}

namespace {

// The smallest IoU between the answer's masks and the stored ones (0 when their counts differ).
double MinMaskIou(const NpyArray& masks, const Result& result) {
  if (masks.shape.empty() || static_cast<size_t>(masks.shape[0]) != result.masks.size()) return 0.0;
  double iou = 1.0;
  std::vector<float> ref = masks.AsFloats();
  const size_t n = static_cast<size_t>(result.height) * result.width;
  if (ref.size() < result.masks.size() * n) return 0.0;
  for (size_t m = 0; m < result.masks.size(); ++m) {
    size_t inter = 0, uni = 0;
    for (size_t p = 0; p < n; ++p) {
      bool a = result.masks[m][p] != 0, b = ref[m * n + p] != 0;
      inter += a && b;
      uni += a || b;
    }
    iou = std::fmin(iou, uni ? static_cast<double>(inter) / uni : 1.0);
  }
  return iou;
}

}  // namespace

Status RunSelfCheck(Session& session, double atol, double min_iou, SelfCheckReport* report,
                    const std::function<void(size_t, const SelfCheckCase&)>& on_case) {
  if (!report) return InvalidArgument("RunSelfCheck needs a report to fill");
  const Manifest& manifest = session.manifest();
  if (std::find(manifest.golden.begin(), manifest.golden.end(), "golden/requests.json") == manifest.golden.end()) {
    return Unsupported("the bundle at " + manifest.root +
                       " has no golden vectors (its manifest lists no golden/requests.json); export it with golden "
                       "vectors to self-check");
  }
  const std::string folder = manifest.root + "/golden";
  std::vector<GoldenCase> cases;
  XSAM_RETURN_IF_ERROR(LoadGolden(folder, &cases));
  SelfCheckReport out;
  out.requests = cases.size();
  out.passed = !cases.empty();
  for (size_t i = 0; i < cases.size(); ++i) {
    RawOutput raw;
    Result result;
    XSAM_RETURN_IF_ERROR(session.Run(cases[i].request, &raw));
    XSAM_RETURN_IF_ERROR(session.Segment(cases[i].request, &result));
    SelfCheckCase c;
    c.task = cases[i].request.task;
    c.class_logit_diff = MaxAbsDiff(raw.logits.cls, cases[i].outputs["class_logits"].AsFloats());
    c.mask_logit_diff = MaxAbsDiff(raw.logits.masks, cases[i].outputs["mask_logits"].AsFloats());
    c.mask_iou = MinMaskIou(cases[i].outputs["masks"], result);
    c.ok = c.class_logit_diff <= atol && c.mask_logit_diff <= atol && c.mask_iou >= min_iou;
    out.passed = out.passed && c.ok;
    out.worst_logit_diff = std::fmax(out.worst_logit_diff, std::fmax(c.class_logit_diff, c.mask_logit_diff));
    out.worst_mask_iou = std::fmin(out.worst_mask_iou, c.mask_iou);
    if (on_case) on_case(i, c);
  }
  *report = out;
  return Status::Ok();
}

}  // namespace xsam
