// Post-processing of every task against spec/postprocess.py on seeded logits that keep queries (panoptic merge
// included, which a random model's answers never reach): same labels and ids, scores within 1e-3, IoU >= 0.99.
#include <cmath>

#include "check.hpp"
#include "golden.hpp"
#include "postprocess.hpp"

using namespace xsam;

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string dir = argv[1];
  std::string text;
  Json doc;
  CHECK_OK(ReadFile(dir + "/cases.json", &text));
  CHECK_OK(Json::Parse(text, &doc));
  std::map<std::string, NpyArray> arrays;
  CHECK_OK(LoadNpz(dir + "/logits.npz", &arrays));
  for (size_t i = 0; i < doc["cases"].size(); ++i) {
    const Json& c = doc["cases"][i];
    Task task;
    CHECK_OK(ParseTask(c["task"].as_string(), &task));
    const NpyArray& cls = arrays["class_logits_" + std::to_string(i)];
    const NpyArray& masks = arrays["mask_logits_" + std::to_string(i)];
    Logits l;
    l.queries = static_cast<int>(cls.shape[0]);
    l.columns = static_cast<int>(cls.shape[1]);
    l.cls = cls.AsFloats();
    l.mask_h = static_cast<int>(masks.shape[1]);
    l.mask_w = static_cast<int>(masks.shape[2]);
    l.masks = masks.AsFloats();
    Geometry g{static_cast<int>(c["image_hw"][0].as_int()), static_cast<int>(c["image_hw"][1].as_int()),
               static_cast<int>(c["scaled_hw"][0].as_int()), static_cast<int>(c["scaled_hw"][1].as_int()),
               static_cast<int>(c["input_size"].as_int())};
    std::vector<std::string> labels;
    for (const Json& s : c["labels"].items()) labels.push_back(s.as_string());
    std::vector<BoxF> boxes;
    for (const Json& b : c["prompt_boxes"].items()) boxes.push_back({b[0].as_double(), b[1].as_double(), b[2].as_double(), b[3].as_double()});
    Result r;
    CHECK_OK(Finish(task, &l, g, labels, boxes, false, "", &r));
    const Json& want = c["expected"];
    const std::string what = "case " + std::to_string(i) + " (" + c["task"].as_string() + ")";
    CHECK(r.masks.size() == want["labels"].size(),
          what + ": " + std::to_string(r.masks.size()) + " masks, Python " + std::to_string(want["labels"].size()));
    double worst_iou = 1, worst_score = 0;
    const size_t n = static_cast<size_t>(g.image_h) * g.image_w;
    for (size_t m = 0; m < std::min(r.masks.size(), want["labels"].size()); ++m) {
      CHECK(r.labels[m] == want["labels"][m].as_string(), what + ": label " + r.labels[m]);
      CHECK(r.label_ids[m] == want["label_ids"][m].as_int(), what + ": label id");
      double ds = std::fabs(r.scores[m] - want["scores"][m].as_double());
      worst_score = std::fmax(worst_score, ds);
      CHECK(ds <= 1e-3, what + ": score differs by " + std::to_string(ds));
      std::vector<uint8_t> ref;
      uint8_t v = 0;
      for (const Json& run : want["rle"][m].items()) {
        ref.insert(ref.end(), static_cast<size_t>(run.as_int()), v);
        v = !v;
      }
      ref.resize(n, 0);
      size_t inter = 0, uni = 0;
      for (size_t p = 0; p < n; ++p) {
        inter += r.masks[m][p] && ref[p];
        uni += r.masks[m][p] || ref[p];
      }
      double iou = uni ? static_cast<double>(inter) / uni : 1.0;
      worst_iou = std::fmin(worst_iou, iou);
      CHECK(iou >= 0.99, what + ": mask " + std::to_string(m) + " IoU " + std::to_string(iou));
    }
    std::printf("%-28s %zu masks, worst IoU %.4f, worst score difference %.2e\n", what.c_str(), r.masks.size(),
                worst_iou, worst_score);
  }
  CHECK(doc["cases"].size() > 0, "no postprocess cases");
  return finish("postprocess");
}
