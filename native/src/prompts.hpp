// spec/prompts.py: chat templates, the per-task question and answer, and the image prefix every prompt starts
// with. The templates are the spec's registry, looked up by the name the manifest stores (model.tokens.template).
#pragma once

#include <string>
#include <vector>

#include "bundle.hpp"
#include "status.hpp"
#include "types.hpp"

namespace xsam {

struct ChatTemplate {
  std::string name, instruction, suffix, stop_word, system;
};

Status GetTemplate(const std::string& name, ChatTemplate* out);

// build_request_prompt: the template around "<image>\n" + question (+ answer and suffix in tensor mode).
Status BuildRequestPrompt(const Request& request, const TokenSpec& tokens, bool with_answer, std::string* out);
// image_prefix: system + template head + "<image>" + "\n".
Status ImagePrefix(const TokenSpec& tokens, std::string* out);

}  // namespace xsam
