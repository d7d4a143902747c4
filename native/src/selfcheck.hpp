// The bundle's golden vectors (golden/requests.json + outputs.npz) run through a session and compared: decoder
// logits within an absolute tolerance, masks by IoU. Shared by the runner's `selfcheck` and xsam_selfcheck.
#pragma once

#include <functional>
#include <vector>

#include "status.hpp"
#include "types.hpp"

namespace xsam {

class Session;

// max |a[i] - b[i]| in double; infinity when the sizes differ.
double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b);

struct SelfCheckCase {
  Task task = Task::kReferring;
  double class_logit_diff = 0;  // max |d| of class_logits
  double mask_logit_diff = 0;   // max |d| of mask_logits
  double mask_iou = 1;          // min IoU over the request's masks (0 when the mask count differs)
  bool ok = false;
};

struct SelfCheckReport {
  size_t requests = 0;
  double worst_logit_diff = 0;
  double worst_mask_iou = 1;
  bool passed = false;  // every case ok, and at least one case
};

// Runs every golden request of the session's bundle. A bundle whose manifest lists no golden/requests.json is
// kUnsupported;
// unreadable vectors or a failed request are errors. `on_case`, when set, sees each case as it finishes.
// The session's current image is replaced by the golden images (the next Segment of another image re-encodes).
Status RunSelfCheck(Session& session, double atol, double min_iou, SelfCheckReport* report,
                    const std::function<void(size_t, const SelfCheckCase&)>& on_case = nullptr);

}  // namespace xsam
