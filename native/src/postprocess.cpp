#include "postprocess.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

namespace xsam {
namespace {

constexpr double kObjectMaskThreshold = 0.8;  // postprocess_panoptic defaults
constexpr double kOverlapThreshold = 0.8;
constexpr double kMaskThreshold = 0.5;
constexpr double kInstanceThreshold = 0.0;     // postprocess_instance / visual_grounded default
constexpr double kInteractiveThreshold = 0.5;  // postprocess_interactive default
constexpr size_t kInteractiveStep = 8;          // queries scored per round (min(8, chunk))

// Row-wise softmax in float32 (masks.py softmax).
std::vector<float> Softmax(const Logits& l) {
  std::vector<float> p(l.cls.size());
  for (int q = 0; q < l.queries; ++q) {
    const float* x = &l.cls[static_cast<size_t>(q) * l.columns];
    float* y = &p[static_cast<size_t>(q) * l.columns];
    float m = *std::max_element(x, x + l.columns);
    float sum = 0;
    for (int c = 0; c < l.columns; ++c) sum += (y[c] = std::exp(x[c] - m));
    for (int c = 0; c < l.columns; ++c) y[c] /= sum;
  }
  return p;
}

float Sigmoid(float x) {
  float e = std::exp(-std::fabs(x));
  return (x >= 0 ? 1.0f : e) / (1.0f + e);
}

const float* MaskOf(const Logits& l, int q) { return &l.masks[static_cast<size_t>(q) * l.mask_h * l.mask_w]; }

struct Binary {
  std::vector<uint8_t> mask;
  float score = 0;
};

// binary_masks: full-size logits > 0 and the mean sigmoid inside (upstream's + 1e-6).
Binary BinaryMask(const Upsampler& up, const Logits& l, int q) {
  Binary b;
  const size_t n = static_cast<size_t>(up.height()) * up.width();
  b.mask.assign(n, 0);
  const float* low = MaskOf(l, q);
  // a bilinear resize is a convex combination: no positive low-res logit, no positive pixel
  if (*std::max_element(low, low + l.mask_h * l.mask_w) <= 0) return b;
  std::vector<float> full(n);
  up.Apply(low, full.data());
  double sum = 0;
  size_t count = 0;
  for (size_t i = 0; i < n; ++i) {
    if (full[i] > 0) {
      b.mask[i] = 1;
      sum += 1.0f / (1.0f + std::exp(-full[i]));
      ++count;
    }
  }
  b.score = static_cast<float>(sum / (static_cast<double>(count) + 1e-6));
  return b;
}

void Push(Result* r, std::vector<uint8_t> mask, const std::string& label, float score, int64_t id) {
  r->masks.push_back(std::move(mask));
  r->labels.push_back(label);
  r->scores.push_back(score);
  r->label_ids.push_back(id);
}

// best_queries for the given class columns (referring, reasoning, GCG).
void BestQueries(const Logits& l, const Geometry& g, const std::vector<std::string>& labels, Result* r) {
  std::vector<float> p = Softmax(l);
  Upsampler up(l.mask_h, l.mask_w, g);
  const size_t n = static_cast<size_t>(g.image_h) * g.image_w;
  std::vector<float> full(n);
  for (size_t c = 0; c < labels.size(); ++c) {
    int best = 0;
    for (int q = 1; q < l.queries; ++q) {
      if (p[static_cast<size_t>(q) * l.columns + c] > p[static_cast<size_t>(best) * l.columns + c]) best = q;
    }
    up.Apply(MaskOf(l, best), full.data());
    std::vector<uint8_t> mask(n);
    for (size_t i = 0; i < n; ++i) mask[i] = full[i] > 0;
    Push(r, std::move(mask), labels[c], p[static_cast<size_t>(best) * l.columns + c], static_cast<int64_t>(c));
  }
}

void Panoptic(const Logits& l, const Geometry& g, const std::vector<std::string>& categories, Result* r) {
  const int num_classes = l.columns - 1;
  std::vector<float> p = Softmax(l);
  std::vector<int> kept, labels;
  std::vector<float> scores;
  for (int q = 0; q < l.queries; ++q) {
    const float* row = &p[static_cast<size_t>(q) * l.columns];
    int label = static_cast<int>(std::max_element(row, row + l.columns) - row);
    if (label != num_classes && row[label] > kObjectMaskThreshold) {
      kept.push_back(q);
      labels.push_back(label);
      scores.push_back(row[label]);
    }
  }
  if (kept.empty()) return;
  Upsampler up(l.mask_h, l.mask_w, g);
  const size_t n = static_cast<size_t>(g.image_h) * g.image_w;
  std::vector<float> best_val(n, -std::numeric_limits<float>::infinity()), full(n);
  std::vector<int> best_idx(n, 0);
  std::vector<int64_t> original(kept.size(), 0), final_area(kept.size(), 0);
  for (size_t k = 0; k < kept.size(); ++k) {
    up.Apply(MaskOf(l, kept[k]), full.data());
    for (size_t i = 0; i < n; ++i) {
      float v = Sigmoid(full[i]) * scores[k];
      original[k] += v >= kMaskThreshold;
      if (v > best_val[i]) {  // strict: earlier queries win ties, as torch's argmax does
        best_val[i] = v;
        best_idx[i] = static_cast<int>(k);
      }
    }
  }
  for (size_t i = 0; i < n; ++i) ++final_area[best_idx[i]];
  for (size_t k = 0; k < kept.size(); ++k) {
    if (final_area[k] == 0 || original[k] == 0) continue;
    if (!(static_cast<double>(final_area[k]) / static_cast<double>(original[k]) > kOverlapThreshold)) continue;
    std::vector<uint8_t> mask(n);
    for (size_t i = 0; i < n; ++i) mask[i] = best_idx[i] == static_cast<int>(k);
    Push(r, std::move(mask), categories[labels[k]], scores[k], labels[k]);
  }
}

// _instance_core: top (query, class) pairs, score = class prob × mean sigmoid inside the mask.
void Instance(const Logits& l, const Geometry& g, const std::vector<std::string>& labels, Result* r) {
  const int num_classes = l.columns - 1;
  if (l.queries == 0 || num_classes == 0) return;
  std::vector<float> p = Softmax(l);
  std::vector<float> probs;  // (Q·C), background dropped
  for (int q = 0; q < l.queries; ++q) {
    for (int c = 0; c < num_classes; ++c) probs.push_back(p[static_cast<size_t>(q) * l.columns + c]);
  }
  std::vector<size_t> order(probs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return -probs[a] < -probs[b]; });
  order.resize(std::min<size_t>(order.size(), static_cast<size_t>(l.queries)));
  Upsampler up(l.mask_h, l.mask_w, g);
  std::map<int, Binary> masks;
  struct Pick {
    size_t pair;
    float score;
  };
  std::vector<Pick> picks;
  for (size_t pair : order) {
    if (!(probs[pair] > kInstanceThreshold)) continue;
    int q = static_cast<int>(pair / num_classes);
    if (!masks.count(q)) masks[q] = BinaryMask(up, l, q);
    float final_score = probs[pair] * masks[q].score;
    if (final_score > kInstanceThreshold && masks[q].score > 0) picks.push_back({pair, final_score});
  }
  std::stable_sort(picks.begin(), picks.end(), [](const Pick& a, const Pick& b) { return -a.score < -b.score; });
  for (const Pick& pk : picks) {
    int q = static_cast<int>(pk.pair / num_classes), c = static_cast<int>(pk.pair % num_classes);
    Push(r, masks[q].mask, labels[c], pk.score, c);
  }
}

double BoxIou(const BoxF& a, const BoxF& b) {
  double iw = std::max(0.0, std::min(a[2], b[2]) - std::max(a[0], b[0]));
  double ih = std::max(0.0, std::min(a[3], b[3]) - std::max(a[1], b[1]));
  double inter = iw * ih;
  double uni = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return uni > 0 ? inter / uni : 0.0;
}

// postprocess_interactive: per prompt, candidates scoring ≥ threshold (or the best), picked by box IoU.
void Interactive(const Logits& l, const Geometry& g, const std::vector<BoxF>& boxes, Result* r) {
  const int k_prompts = l.columns - 1;
  std::vector<float> p = Softmax(l);
  Upsampler up(l.mask_h, l.mask_w, g);
  struct Cached {
    Binary bin;
    BoxF box;
  };
  std::map<int, Cached> cache;
  for (int k = 0; k < k_prompts; ++k) {
    auto prob = [&](int q) { return p[static_cast<size_t>(q) * l.columns + k]; };
    std::vector<int> order(static_cast<size_t>(l.queries));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return -prob(a) < -prob(b); });
    std::vector<std::pair<int, double>> scored;
    double best = -std::numeric_limits<double>::infinity();
    for (size_t start = 0; start < order.size(); start += kInteractiveStep) {
      if (prob(order[start]) < kInteractiveThreshold && prob(order[start]) < best) break;
      for (size_t i = start; i < std::min(order.size(), start + kInteractiveStep); ++i) {
        int q = order[i];
        if (!cache.count(q)) {
          Cached c;
          c.bin = BinaryMask(up, l, q);
          c.box = MaskBox(c.bin.mask.data(), g.image_h, g.image_w);
          cache[q] = std::move(c);
        }
        double score = static_cast<double>(prob(q)) * static_cast<double>(cache[q].bin.score);
        scored.push_back({q, score});
        best = std::max(best, score);
      }
    }
    std::vector<std::pair<int, double>> candidates;
    for (const auto& qs : scored) {
      if (qs.second >= kInteractiveThreshold || qs.second == best) candidates.push_back(qs);
    }
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const auto& a, const auto& b) { return -a.second < -b.second; });
    size_t pick = 0;
    double best_iou = -1;
    for (size_t i = 0; i < candidates.size(); ++i) {
      double iou = BoxIou(boxes[k], cache[candidates[i].first].box);
      if (iou > best_iou) {
        best_iou = iou;
        pick = i;
      }
    }
    Push(r, cache[candidates[pick].first].bin.mask, "prompt " + std::to_string(k),
         static_cast<float>(candidates[pick].second), k);
  }
}

void Semantic(const Logits& l, const Geometry& g, const std::vector<std::string>& categories, Result* r) {
  const int num_classes = l.columns - 1;
  if (l.queries == 0 || num_classes == 0) return;
  std::vector<float> p = Softmax(l);
  const size_t m = static_cast<size_t>(l.mask_h) * l.mask_w;
  // per-class maps at low resolution: einsum("qc,qhw->chw", probs, sigmoid(masks))
  std::vector<float> seg(static_cast<size_t>(num_classes) * m, 0.0f);
  for (int c = 0; c < num_classes; ++c) {
    for (size_t i = 0; i < m; ++i) {
      double acc = 0;
      for (int q = 0; q < l.queries; ++q) {
        acc += static_cast<double>(p[static_cast<size_t>(q) * l.columns + c]) * Sigmoid(MaskOf(l, q)[i]);
      }
      seg[c * m + i] = static_cast<float>(acc);
    }
  }
  Upsampler up(l.mask_h, l.mask_w, g);
  const size_t n = static_cast<size_t>(g.image_h) * g.image_w;
  std::vector<float> best(n, -std::numeric_limits<float>::infinity()), full(n);
  std::vector<int> label(n, 0);
  for (int c = 0; c < num_classes; ++c) {
    up.Apply(&seg[c * m], full.data());
    for (size_t i = 0; i < n; ++i) {
      if (full[i] > best[i]) {
        best[i] = full[i];
        label[i] = c;
      }
    }
  }
  std::vector<double> sums(static_cast<size_t>(num_classes), 0.0);
  std::vector<int64_t> counts(static_cast<size_t>(num_classes), 0);
  for (size_t i = 0; i < n; ++i) {
    sums[label[i]] += best[i];
    ++counts[label[i]];
  }
  for (int c = 0; c < num_classes; ++c) {
    if (!counts[c]) continue;
    std::vector<uint8_t> mask(n);
    for (size_t i = 0; i < n; ++i) mask[i] = label[i] == c;
    Push(r, std::move(mask), categories[c], static_cast<float>(std::min(sums[c] / counts[c], 1.0)), c);
  }
}

Status CheckLabels(const Logits& l, size_t n, const char* what) {
  if (n != static_cast<size_t>(l.columns - 1)) {
    return InvalidArgument("got " + std::to_string(n) + " " + what + " but class_logits have " +
                           std::to_string(l.columns - 1) + " non-background columns");
  }
  return Status::Ok();
}

}  // namespace

Status Finish(Task task, const Logits* l, const Geometry& g, const std::vector<std::string>& labels,
              const std::vector<BoxF>& prompt_boxes, bool has_text, const std::string& text, Result* out) {
  Result r;
  r.height = g.image_h;
  r.width = g.image_w;
  r.has_text = has_text;
  r.text = text;
  if (l == nullptr || task == Task::kChat || l->queries == 0) {
    *out = std::move(r);
    return Status::Ok();
  }
  switch (task) {
    case Task::kReferring:
    case Task::kReasoning:
      XSAM_RETURN_IF_ERROR(CheckLabels(*l, labels.size(), "phrases"));
      BestQueries(*l, g, {labels[0]}, &r);  // phrase_index 0
      break;
    case Task::kGcg:
      XSAM_RETURN_IF_ERROR(CheckLabels(*l, labels.size(), "phrases"));
      BestQueries(*l, g, labels, &r);
      break;
    case Task::kPanoptic:
    case Task::kOpenVocabulary:
      XSAM_RETURN_IF_ERROR(CheckLabels(*l, labels.size(), "categories"));
      Panoptic(*l, g, labels, &r);
      break;
    case Task::kInstance:
      XSAM_RETURN_IF_ERROR(CheckLabels(*l, labels.size(), "categories"));
      Instance(*l, g, labels, &r);
      break;
    case Task::kVisualGrounded: {
      std::vector<std::string> names;
      for (int k = 0; k < l->columns - 1; ++k) names.push_back("prompt " + std::to_string(k));
      Instance(*l, g, names, &r);
      break;
    }
    case Task::kInteractive:
      if (prompt_boxes.size() != static_cast<size_t>(l->columns - 1)) {
        return InvalidArgument("interactive post-processing needs one prompt box per prompt column");
      }
      Interactive(*l, g, prompt_boxes, &r);
      break;
    case Task::kSemantic:
      XSAM_RETURN_IF_ERROR(CheckLabels(*l, labels.size(), "categories"));
      Semantic(*l, g, labels, &r);
      break;
    case Task::kChat:
      break;
  }
  *out = std::move(r);
  return Status::Ok();
}

}  // namespace xsam
