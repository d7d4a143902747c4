#include "gestures.hpp"

#include <algorithm>
#include <cmath>

namespace xsam_apple {

bool PromptFromGesture(const Fit& fit, GestureMode mode, const std::vector<std::array<double, 2>>& path,
                       BridgePrompt* out, double min_spacing) {
  if (path.empty() || fit.scale <= 0) return false;
  BridgePrompt p;
  double x = 0, y = 0;
  switch (mode) {
    case GestureMode::kPoint:
      if (!ViewToImage(fit, path.back()[0], path.back()[1], &x, &y)) return false;
      p.kind = BridgePrompt::Kind::kPoint;
      p.xy = {x, y};
      break;
    case GestureMode::kBox: {
      double x0, y0, x1, y1;
      ViewToImageClamped(fit, path.front()[0], path.front()[1], &x0, &y0);
      ViewToImageClamped(fit, path.back()[0], path.back()[1], &x1, &y1);
      if (std::fabs(x1 - x0) < 1 || std::fabs(y1 - y0) < 1) return false;  // a slip of the finger
      p.kind = BridgePrompt::Kind::kBox;
      p.xy = {std::min(x0, x1), std::min(y0, y1), std::max(x0, x1), std::max(y0, y1)};
      break;
    }
    case GestureMode::kScribble:
      p.kind = BridgePrompt::Kind::kScribble;
      for (const auto& v : path) {
        ViewToImageClamped(fit, v[0], v[1], &x, &y);
        size_t n = p.xy.size();
        if (n == 0 || std::hypot(x - p.xy[n - 2], y - p.xy[n - 1]) >= min_spacing) p.xy.insert(p.xy.end(), {x, y});
      }
      break;
  }
  *out = std::move(p);
  return true;
}

}  // namespace xsam_apple
