// The request and result of spec/types.py: one question about one image, and masks + labels + scores + text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "image.hpp"
#include "status.hpp"

namespace xsam {

enum class Task {
  kReferring,
  kReasoning,
  kPanoptic,
  kInstance,
  kSemantic,
  kOpenVocabulary,
  kInteractive,
  kVisualGrounded,
  kGcg,
  kChat,
};

const char* TaskName(Task task);                        // the CLI / file spelling ("open_vocabulary")
Status ParseTask(const std::string& name, Task* out);  // its inverse; the error lists every task
bool IsCategoryTask(Task t);                            // panoptic, instance, semantic, open_vocabulary
bool IsPromptTask(Task t);                              // interactive, visual_grounded
bool IsGenerateTask(Task t);                            // gcg, chat

// A visual prompt in original-image pixels (x right, y down).
struct Prompt {
  enum class Kind { kPoint, kScribble, kBox, kMask };
  Kind kind = Kind::kPoint;
  std::vector<std::pair<double, double>> points;  // point: one (x, y); scribble: the polyline
  double box[4] = {0, 0, 0, 0};                    // x0, y0, x1, y1
  std::vector<uint8_t> mask;                       // (H, W) 0/1 at the image size
  int mask_height = 0, mask_width = 0;

  static Prompt Point(double x, double y);
  static Prompt Box(double x0, double y0, double x1, double y1);
};

struct Request {
  Image image;  // (H, W, 3) RGB
  Task task = Task::kReferring;
  bool has_text = false;
  std::string text;
  std::vector<std::string> categories;
  std::vector<Prompt> prompts;
};

struct Result {
  int height = 0, width = 0;
  std::vector<std::vector<uint8_t>> masks;  // N masks of H·W 0/1, row-major
  std::vector<std::string> labels;
  std::vector<float> scores;
  std::vector<int64_t> label_ids;
  bool has_text = false;
  std::string text;
};

// spec/types.py validate_request: a missing or malformed field for the task, before any compute.
Status ValidateRequest(const Request& request);

// Python's str.strip(): leading and trailing whitespace (ASCII and Unicode White_Space) removed.
std::string Strip(const std::string& s);

}  // namespace xsam
