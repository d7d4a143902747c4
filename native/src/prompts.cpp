#include "prompts.hpp"

namespace xsam {
namespace {

const char kInputField[] = "{input}";
const char kImageSeparator[] = "\n";
const char kGcgQuestion[] =
    "Can you provide a brief description of the image? "
    "Please respond with interleaved segmentation masks for the corresponding phrases.";

const ChatTemplate kTemplates[] = {
    {"phi3_chat", "<|user|>\n{input}<|end|>\n<|assistant|>\n", "<|end|>", "<|end|>", ""},
    {"qwen_chat", "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>", "<|im_end|>", ""},
    {"plain", "<|user|> {input} <|end|> <|assistant|> ", " <|end|>", "<|end|>", ""},
};

Status CheckReserved(const std::string& value, const std::string& field, const TokenSpec& t) {
  std::string found;
  for (const std::string& m : {t.image, t.region, t.seg, t.phrase_start, t.phrase_end}) {
    if (value.find(m) != std::string::npos) found += (found.empty() ? "" : ", ") + m;
  }
  if (!found.empty()) {
    return InvalidArgument(field + " '" + value + "' contains the reserved marker(s) " + found +
                           "; the prompt builder inserts these itself, remove them from the input");
  }
  return Status::Ok();
}

std::string Phrase(const TokenSpec& t, const std::string& inner) { return t.phrase_start + inner + t.phrase_end; }

Status BuildQuestion(const Request& r, const TokenSpec& t, std::string* out) {
  const std::string task = TaskName(r.task);
  if (r.task == Task::kReferring || r.task == Task::kReasoning || r.task == Task::kChat) {
    if (!r.has_text || Strip(r.text).empty()) return InvalidArgument("task '" + task + "' needs a non-empty text");
    XSAM_RETURN_IF_ERROR(CheckReserved(r.text, "text", t));
    if (r.task == Task::kReferring) {
      *out = "Can you segment " + Phrase(t, Strip(r.text)) +
             " in this image? Please output the corresponding segmentation mask.";
    } else if (r.task == Task::kReasoning) {
      *out = Phrase(t, Strip(r.text)) + " Please output the corresponding segmentation mask.";
    } else {
      *out = r.text;
    }
    return Status::Ok();
  }
  if (IsCategoryTask(r.task)) {
    std::string listed;
    if (r.categories.empty()) return InvalidArgument("task '" + task + "' needs a list of non-empty category names");
    for (const std::string& c : r.categories) {
      XSAM_RETURN_IF_ERROR(CheckReserved(c, "category", t));
      std::string name = Strip(c);
      if (name.empty()) return InvalidArgument("task '" + task + "' needs a list of non-empty category names");
      listed += (listed.empty() ? "" : ", ") + Phrase(t, name);
    }
    *out = "Can you segment the image based on the following categories: " + listed +
           "? Please output the segmentation masks.";
    return Status::Ok();
  }
  if (IsPromptTask(r.task)) {
    if (r.prompts.empty()) {
      return InvalidArgument("task '" + task + "' needs num_regions >= 1 (one per visual prompt), got 0");
    }
    std::string listed;
    for (size_t i = 0; i < r.prompts.size(); ++i) listed += (i ? ", " : "") + Phrase(t, t.region);
    *out = "Can you segment the image based on the following regions: " + listed +
           "? Please output the segmentation masks.";
    return Status::Ok();
  }
  // GCG: the user's text replaces the default question
  if (r.has_text && !Strip(r.text).empty()) {
    XSAM_RETURN_IF_ERROR(CheckReserved(r.text, "text", t));
    *out = r.text;
  } else {
    *out = kGcgQuestion;
  }
  return Status::Ok();
}

// answer_for: the fixed answer of tensor mode, empty for GCG / chat.
std::string AnswerFor(Task task, const TokenSpec& t) {
  if (task == Task::kReferring || task == Task::kReasoning) return "Sure, it is " + t.seg + ".";
  if (IsCategoryTask(task) || IsPromptTask(task)) return "Sure, " + t.seg + ".";
  return "";
}

std::string Wrap(const ChatTemplate& c, const std::string& user) {
  std::string s = c.instruction;
  return c.system + s.replace(s.find(kInputField), std::string(kInputField).size(), user);
}

}  // namespace

Status GetTemplate(const std::string& name, ChatTemplate* out) {
  std::string known;
  for (const ChatTemplate& t : kTemplates) {
    if (t.name == name) {
      *out = t;
      return Status::Ok();
    }
    known += (known.empty() ? "" : ", ") + t.name;
  }
  return Unsupported("unknown chat template '" + name + "'; known templates: " + known);
}

Status BuildRequestPrompt(const Request& request, const TokenSpec& tokens, bool with_answer, std::string* out) {
  ChatTemplate chat;
  XSAM_RETURN_IF_ERROR(GetTemplate(tokens.template_name, &chat));
  std::string question;
  XSAM_RETURN_IF_ERROR(BuildQuestion(request, tokens, &question));
  *out = Wrap(chat, tokens.image + kImageSeparator + question);
  std::string answer = AnswerFor(request.task, tokens);
  if (with_answer && !answer.empty()) *out += answer + chat.suffix;
  return Status::Ok();
}

Status ImagePrefix(const TokenSpec& tokens, std::string* out) {
  ChatTemplate chat;
  XSAM_RETURN_IF_ERROR(GetTemplate(tokens.template_name, &chat));
  *out = chat.system + chat.instruction.substr(0, chat.instruction.find(kInputField)) + tokens.image +
         kImageSeparator;
  return Status::Ok();
}

}  // namespace xsam
