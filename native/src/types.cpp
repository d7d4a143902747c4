#include "types.hpp"

#include <cstdio>
#include <set>

#include "unicode.hpp"

namespace xsam {
namespace {

struct TaskEntry {
  Task task;
  const char* name;
};

constexpr TaskEntry kTasks[] = {
    {Task::kReferring, "referring"},   {Task::kReasoning, "reasoning"},
    {Task::kPanoptic, "panoptic"},     {Task::kInstance, "instance"},
    {Task::kSemantic, "semantic"},     {Task::kOpenVocabulary, "open_vocabulary"},
    {Task::kInteractive, "interactive"}, {Task::kVisualGrounded, "visual_grounded"},
    {Task::kGcg, "gcg"},               {Task::kChat, "chat"},
};

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

Status ValidatePrompt(const Prompt& p, size_t index, int h, int w) {
  auto inside = [&](double x, double y) { return 0 <= x && x < w && 0 <= y && y < h; };
  const std::string where = "prompt " + std::to_string(index);
  const std::string size = std::to_string(w) + "x" + std::to_string(h);
  switch (p.kind) {
    case Prompt::Kind::kPoint:
      if (p.points.size() != 1 || !inside(p.points[0].first, p.points[0].second)) {
        return InvalidArgument(where + ": point is outside the " + size + " image");
      }
      break;
    case Prompt::Kind::kScribble:
      if (p.points.empty()) return InvalidArgument(where + ": a scribble needs at least one point");
      for (const auto& pt : p.points) {
        if (!inside(pt.first, pt.second)) {
          return InvalidArgument(where + ": scribble point (" + Num(pt.first) + ", " + Num(pt.second) +
                                 ") is outside the " + size + " image");
        }
      }
      break;
    case Prompt::Kind::kBox:
      if (!(p.box[0] < p.box[2] && p.box[1] < p.box[3])) {
        return InvalidArgument(where + ": box needs x0 < x1 and y0 < y1");
      }
      if (!(inside(p.box[0], p.box[1]) && 0 < p.box[2] && p.box[2] <= w && 0 < p.box[3] && p.box[3] <= h)) {
        return InvalidArgument(where + ": box is outside the " + size + " image");
      }
      break;
    case Prompt::Kind::kMask: {
      if (p.mask_height != h || p.mask_width != w ||
          p.mask.size() != static_cast<size_t>(h) * static_cast<size_t>(w)) {
        return InvalidArgument(where + ": mask is " + std::to_string(p.mask_width) + "x" +
                               std::to_string(p.mask_height) + ", the image is " + size);
      }
      bool any = false;
      for (uint8_t v : p.mask) any = any || v != 0;
      if (!any) return InvalidArgument(where + ": mask prompt is empty");
      break;
    }
  }
  return Status::Ok();
}

}  // namespace

const char* TaskName(Task task) {
  for (const auto& e : kTasks) {
    if (e.task == task) return e.name;
  }
  return "?";
}

Status ParseTask(const std::string& name, Task* out) {
  std::string known;
  for (const auto& e : kTasks) {
    if (name == e.name) {
      *out = e.task;
      return Status::Ok();
    }
    known += known.empty() ? e.name : std::string(", ") + e.name;
  }
  return InvalidArgument("unknown task '" + name + "'; known tasks: " + known);
}

bool IsCategoryTask(Task t) {
  return t == Task::kPanoptic || t == Task::kInstance || t == Task::kSemantic || t == Task::kOpenVocabulary;
}
bool IsPromptTask(Task t) { return t == Task::kInteractive || t == Task::kVisualGrounded; }
bool IsGenerateTask(Task t) { return t == Task::kGcg || t == Task::kChat; }

Prompt Prompt::Point(double x, double y) {
  Prompt p;
  p.kind = Kind::kPoint;
  p.points = {{x, y}};
  return p;
}

Prompt Prompt::Box(double x0, double y0, double x1, double y1) {
  Prompt p;
  p.kind = Kind::kBox;
  p.box[0] = x0;
  p.box[1] = y0;
  p.box[2] = x1;
  p.box[3] = y1;
  return p;
}

std::string Strip(const std::string& s) {
  std::vector<uint32_t> cps = DecodeUtf8(s);
  size_t b = 0, e = cps.size();
  while (b < e && IsPythonSpace(cps[b])) ++b;
  while (e > b && IsPythonSpace(cps[e - 1])) --e;
  return EncodeUtf8(std::vector<uint32_t>(cps.begin() + b, cps.begin() + e));
}

Status ValidateRequest(const Request& r) {
  const Image& img = r.image;
  if (img.channels != 3 || img.data.size() != static_cast<size_t>(img.height) * img.width * 3) {
    return InvalidArgument("image must be an (H, W, 3) RGB array");
  }
  if (img.height < 2 || img.width < 2) {
    return InvalidArgument("image is " + std::to_string(img.width) + "x" + std::to_string(img.height) +
                           " pixels; at least 2x2 is needed to segment anything");
  }
  const std::string task = TaskName(r.task);
  if (r.task == Task::kReferring || r.task == Task::kReasoning || r.task == Task::kChat) {
    if (!r.has_text || Strip(r.text).empty()) {
      return InvalidArgument("task '" + task + "' needs a non-empty text");
    }
  }
  if (IsCategoryTask(r.task)) {
    std::set<std::string> seen;
    if (r.categories.empty()) return InvalidArgument("task '" + task + "' needs a list of non-empty category names");
    for (const std::string& c : r.categories) {
      std::string name = Strip(c);
      if (name.empty()) return InvalidArgument("task '" + task + "' needs a list of non-empty category names");
      if (!seen.insert(name).second) return InvalidArgument("category names must be unique, got '" + name + "' twice");
    }
  }
  if (IsPromptTask(r.task)) {
    if (r.prompts.empty()) {
      return InvalidArgument("task '" + task +
                             "' needs at least one visual prompt (point, scribble, box or mask)");
    }
    for (size_t i = 0; i < r.prompts.size(); ++i) {
      XSAM_RETURN_IF_ERROR(ValidatePrompt(r.prompts[i], i, img.height, img.width));
    }
  }
  return Status::Ok();
}

}  // namespace xsam
