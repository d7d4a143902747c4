// Touches on the iOS demo's image view turned into prompts in image pixels, as android_demo/core's
// PromptGestures / DemoInput.prompt do in Kotlin: a tap is a point (none on the letterbox bars), a drag a box
// (either direction, clamped, at least one pixel each way), a finger path a scribble (clamped, thinned).
#ifndef XSAM_APPLE_GESTURES_HPP_
#define XSAM_APPLE_GESTURES_HPP_

#include <array>
#include <vector>

#include "bridge_session.hpp"
#include "overlay_math.hpp"

namespace xsam_apple {

enum class GestureMode { kPoint, kBox, kScribble };

// The prompt a finished gesture (view points, touch-down to touch-up) draws; false when it draws none.
// min_spacing: scribble points closer than this (image pixels) to the last kept one are dropped.
bool PromptFromGesture(const Fit& fit, GestureMode mode, const std::vector<std::array<double, 2>>& path,
                       BridgePrompt* out, double min_spacing = 1.0);

}  // namespace xsam_apple

#endif  // XSAM_APPLE_GESTURES_HPP_
