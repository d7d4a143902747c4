// The native tokenizer against the `tokenizers` package on shared strings: ids of encode(add_special_tokens=False)
// and decode with and without special tokens, for word-level, byte-level BPE and SentencePiece-style BPE files.
#include <map>

#include "check.hpp"
#include "hf_tokenizer.hpp"
#include "json.hpp"

using namespace xsam;

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string dir = argv[1];
  std::string text;
  Json doc;
  CHECK_OK(ReadFile(dir + "/cases.json", &text));
  CHECK_OK(Json::Parse(text, &doc));
  std::map<std::string, HfTokenizer> tokenizers;
  std::map<std::string, int> passed, total;
  for (const Json& c : doc["cases"].items()) {
    const std::string file = c["tokenizer"].as_string();
    if (!tokenizers.count(file)) CHECK_OK(HfTokenizer::FromFile(dir + "/" + file, &tokenizers[file]));
    const HfTokenizer& tok = tokenizers[file];
    std::vector<int64_t> ids, want;
    CHECK_OK(GetInts(c["ids"], &want, "ids"));
    Status st = tok.Encode(c["text"].as_string(), &ids);
    std::string decoded, decoded_skip;
    CHECK_OK(tok.Decode(want, false, &decoded));
    CHECK_OK(tok.Decode(want, true, &decoded_skip));
    bool ok = st.ok() && ids == want && decoded == c["decoded"].as_string() && decoded_skip == c["decoded_skip"].as_string();
    ++total[file];
    passed[file] += ok;
    if (!ok) {
      std::string got;
      for (int64_t id : ids) got += std::to_string(id) + " ";
      std::string exp;
      for (int64_t id : want) exp += std::to_string(id) + " ";
      CHECK(false, file + " '" + c["text"].as_string() + "': " + (st.ok() ? "" : st.message()) + "\n  ids  " + got +
                       "\n  want " + exp + "\n  decoded '" + decoded + "' want '" + c["decoded"].as_string() +
                       "'\n  skip '" + decoded_skip + "' want '" + c["decoded_skip"].as_string() + "'");
    }
  }
  for (const auto& kv : total) std::printf("%-28s %d / %d strings match tokenizers\n", kv.first.c_str(), passed[kv.first], kv.second);
  CHECK(!total.empty(), "no tokenizer cases");
  return finish("tokenizer");
}
