#include "runner_io.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "image.hpp"

namespace xsam {
namespace {

// spec/image_io.py palette: golden-ratio hue steps, full saturation, value alternating 1 / 0.75.
std::vector<std::array<uint8_t, 3>> Palette(size_t n) {
  std::vector<std::array<uint8_t, 3>> out;
  const double offsets[3] = {5.0, 3.0, 1.0};
  for (size_t i = 0; i < n; ++i) {
    double hue = std::fmod(static_cast<double>(i) * 0.618033988749895, 1.0);
    double value = i % 2 == 0 ? 1.0 : 0.75;
    std::array<uint8_t, 3> rgb{};
    for (int c = 0; c < 3; ++c) {
      double k = std::fmod(hue * 6 + offsets[c], 6.0);
      double v = value * (1 - std::clamp(std::min(k, 4 - k), 0.0, 1.0));
      rgb[c] = static_cast<uint8_t>(std::nearbyint(v * 255));
    }
    out.push_back(rgb);
  }
  return out;
}

Status Numbers(const std::string& text, size_t n, const std::string& flag, std::vector<double>* out) {
  out->clear();
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, ',')) {
    char* end = nullptr;
    double v = std::strtod(part.c_str(), &end);
    if (end == part.c_str()) return InvalidArgument(flag + " expects " + std::to_string(n) + " numbers, got '" + text + "'");
    out->push_back(v);
  }
  if (out->size() != n) return InvalidArgument(flag + " expects " + std::to_string(n) + " numbers, got '" + text + "'");
  return Status::Ok();
}

}  // namespace

std::string Args::get(const std::string& k, const std::string& fallback) const {
  auto it = options.find(k);
  return it == options.end() || it->second.empty() ? fallback : it->second.back();
}

Args ParseArgs(int argc, char** argv, int first) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) == 0) {
      std::string key = s.substr(2);
      bool has_value = i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0;
      a.options[key].push_back(has_value ? argv[++i] : "");
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

Json ResultSummary(const Result& r) {
  Json masks = Json::array();
  for (size_t i = 0; i < r.labels.size(); ++i) {
    int x0 = r.width, y0 = r.height, x1 = -1, y1 = -1;
    int64_t area = 0;
    for (int y = 0; y < r.height; ++y) {
      for (int x = 0; x < r.width; ++x) {
        if (!r.masks[i][static_cast<size_t>(y) * r.width + x]) continue;
        ++area;
        x0 = std::min(x0, x);
        y0 = std::min(y0, y);
        x1 = std::max(x1, x);
        y1 = std::max(y1, y);
      }
    }
    Json item = Json::object();
    item.set("label", r.labels[i]);
    item.set("label_id", r.label_ids[i]);
    item.set("score", std::nearbyint(static_cast<double>(r.scores[i]) * 1e6) / 1e6);
    item.set("area", area);
    item.set("box_xyxy", area ? Json(Json::Array{x0, y0, x1 + 1, y1 + 1}) : Json());
    masks.push(item);
  }
  Json out = Json::object();
  out.set("text", r.has_text ? Json(r.text) : Json());
  out.set("masks", masks);
  return out;
}

Json MaskRle(const std::vector<uint8_t>& mask) {
  Json runs = Json::array();
  uint8_t current = 0;
  int64_t count = 0;
  for (uint8_t v : mask) {
    if ((v != 0) != (current != 0)) {
      runs.push(count);
      current = v != 0;
      count = 0;
    }
    ++count;
  }
  runs.push(count);
  return runs;
}

Image Overlay(const Image& image, const Result& r) {
  std::vector<float> out(image.data.begin(), image.data.end());
  auto colors = Palette(r.masks.size());
  for (size_t m = 0; m < r.masks.size(); ++m) {
    for (size_t i = 0; i < r.masks[m].size(); ++i) {
      if (!r.masks[m][i]) continue;
      for (int c = 0; c < 3; ++c) out[i * 3 + c] = 0.5f * out[i * 3 + c] + 0.5f * colors[m][c];
    }
  }
  Image o = image;
  for (size_t i = 0; i < out.size(); ++i) o.data[i] = static_cast<uint8_t>(std::clamp(std::floor(out[i] + 0.5f), 0.0f, 255.0f));
  return o;
}

Status RequestFromArgs(const Args& args, const Image& image, Request* out) {
  Request r;
  r.image = image;
  std::vector<double> v;
  for (const std::string& s : args.has("point") ? args.options.at("point") : std::vector<std::string>{}) {
    XSAM_RETURN_IF_ERROR(Numbers(s, 2, "--point", &v));
    r.prompts.push_back(Prompt::Point(v[0], v[1]));
  }
  for (const std::string& s : args.has("box") ? args.options.at("box") : std::vector<std::string>{}) {
    XSAM_RETURN_IF_ERROR(Numbers(s, 4, "--box", &v));
    r.prompts.push_back(Prompt::Box(v[0], v[1], v[2], v[3]));
  }
  for (const std::string& s : args.has("scribble") ? args.options.at("scribble") : std::vector<std::string>{}) {
    Prompt p;
    p.kind = Prompt::Kind::kScribble;
    std::stringstream ss(s);
    std::string pt;
    while (std::getline(ss, pt, ';')) {
      if (pt.find_first_not_of(' ') == std::string::npos) continue;
      XSAM_RETURN_IF_ERROR(Numbers(pt, 2, "--scribble point", &v));
      p.points.push_back({v[0], v[1]});
    }
    r.prompts.push_back(std::move(p));
  }
  for (const std::string& s : args.has("mask") ? args.options.at("mask") : std::vector<std::string>{}) {
    Prompt p;
    p.kind = Prompt::Kind::kMask;
    Image m;
    XSAM_RETURN_IF_ERROR(LoadImage(s, &m));
    p.mask_height = m.height;
    p.mask_width = m.width;
    for (size_t i = 0; i < static_cast<size_t>(m.height) * m.width; ++i) {
      p.mask.push_back(std::max({m.data[3 * i], m.data[3 * i + 1], m.data[3 * i + 2]}) > 127);
    }
    r.prompts.push_back(std::move(p));
  }
  if (args.has("categories")) {
    std::stringstream ss(args.get("categories"));
    std::string c;
    while (std::getline(ss, c, ',')) r.categories.push_back(Strip(c));
  }
  if (args.has("text")) {
    r.has_text = true;
    r.text = args.get("text");
  }
  if (args.has("task")) {
    XSAM_RETURN_IF_ERROR(ParseTask(args.get("task"), &r.task));
  } else if (!r.prompts.empty()) {
    r.task = Task::kInteractive;
  } else if (args.has("categories")) {
    r.task = Task::kPanoptic;
  } else if (args.has("text")) {
    r.task = Task::kReferring;
  } else {
    return InvalidArgument("give a query: --text, --categories, or a visual prompt (--point/--box/--scribble/--mask)");
  }
  *out = std::move(r);
  return Status::Ok();
}

}  // namespace xsam
