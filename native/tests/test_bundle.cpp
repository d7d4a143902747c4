// Bundle checks (schema, checksums, confinement, missing files) and the C API's status values on bad input:
// a tampered copy of the fixture bundle must be refused with a message, never crash.
#include <filesystem>
#include <fstream>

#include "bundle.hpp"
#include "check.hpp"
#include "sha256.hpp"
#include "xsam/xsam.h"

using namespace xsam;
namespace fs = std::filesystem;

namespace {

fs::path Copy(const fs::path& bundle, const fs::path& tmp, const std::string& name) {
  fs::path dst = tmp / name;
  fs::remove_all(dst);
  fs::copy(bundle, dst, fs::copy_options::recursive);
  return dst;
}

void Edit(const fs::path& file, const std::string& from, const std::string& to) {
  std::string text;
  ReadFile(file.string(), &text);
  size_t at = text.find(from);
  CHECK(at != std::string::npos, "manifest text '" + from + "' not found");
  if (at != std::string::npos) text.replace(at, from.size(), to);
  WriteFile(file.string(), text);
}

void ExpectRefused(const fs::path& dir, const std::string& what, const std::string& needle) {
  Manifest m;
  Status st = LoadBundle(dir.string(), true, &m);
  CHECK(!st.ok(), what + ": accepted");
  CHECK(st.message().find(needle) != std::string::npos, what + ": message '" + st.message() + "' lacks '" + needle + "'");
  std::printf("refused (%s): %s\n", what.c_str(), st.message().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const fs::path bundle = argv[1], tmp = argv[2];
  fs::create_directories(tmp);
  CHECK(Sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256(abc)");

  Manifest m;
  CHECK_OK(LoadBundle(bundle.string(), true, &m));
  CHECK(m.max_regions == 2 && m.num_image_tokens > 0 && m.graph("llm", "executorch"), "manifest contents");

  fs::path d = Copy(bundle, tmp, "edited_byte");
  {  // one byte flipped in place: same size, so only the checksum can tell
    std::fstream f(d / "executorch" / "region.pte", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c = 0;
    f.get(c);
    f.seekp(100);
    f.put(static_cast<char>(c ^ 0xFF));
  }
  ExpectRefused(d, "a changed byte", "does not match its checksum");

  d = Copy(bundle, tmp, "grown_file");
  { std::ofstream(d / "executorch" / "region.pte", std::ios::app) << "x"; }
  ExpectRefused(d, "a file of another size", "its manifest says");

  d = Copy(bundle, tmp, "unlisted_file");
  { std::ofstream(d / "executorch" / "extra.pte") << "not in the manifest"; }
  ExpectRefused(d, "an unlisted file", "does not list");

  d = Copy(bundle, tmp, "old_schema");
  Edit(d / "manifest.json", "\"schema_version\": 4", "\"schema_version\": 3");
  ExpectRefused(d, "an unsealed (older) bundle", "predates sealed bundles");

  d = Copy(bundle, tmp, "missing_file");
  fs::remove(d / "executorch" / "embed.pte");
  ExpectRefused(d, "a missing file", "missing");

  d = Copy(bundle, tmp, "newer_schema");
  Edit(d / "manifest.json", "\"schema_version\": 4", "\"schema_version\": 99");
  ExpectRefused(d, "a newer schema", "newer");

  d = Copy(bundle, tmp, "dotdot");
  Edit(d / "manifest.json", "\"executorch/region.pte\":", "\"executorch/../../region.pte\":");
  ExpectRefused(d, "a '..' path", "escapes");

  d = Copy(bundle, tmp, "absolute");
  Edit(d / "manifest.json", "\"executorch/region.pte\":", "\"/etc/passwd\":");
  ExpectRefused(d, "an absolute path", "relative");

  d = Copy(bundle, tmp, "symlink_out");
  fs::path outside = tmp / "outside_region.pte";
  fs::copy_file(d / "executorch" / "region.pte", outside, fs::copy_options::overwrite_existing);
  fs::remove(d / "executorch" / "region.pte");
  fs::create_symlink(fs::absolute(outside), d / "executorch" / "region.pte");
  ExpectRefused(d, "a symlink out of the bundle", "outside the bundle");

  d = Copy(bundle, tmp, "unlisted_graph");
  Edit(d / "manifest.json", "\"executorch/region.pte\"", "\"executorch/region_renamed.pte\"");
  ExpectRefused(d, "a graph file without checksum", "missing");

  // the C API: status codes and messages, no aborts
  xsam_session* s = nullptr;
  CHECK(xsam_open((tmp / "nope").c_str(), 1, &s) == XSAM_BUNDLE_ERROR, "open a non-bundle");
  CHECK(std::string(xsam_last_error()).find("not an xsam_edge bundle") != std::string::npos, xsam_last_error());
  CHECK(xsam_request_new("segment-everything") == nullptr, "unknown task");
  CHECK(std::string(xsam_last_error()).find("known tasks") != std::string::npos, xsam_last_error());
  CHECK(xsam_open(bundle.c_str(), 1, &s) == XSAM_OK, xsam_last_error());
  if (s) {
    xsam_request* r = xsam_request_new("referring");
    xsam_result* out = nullptr;
    CHECK(xsam_segment(s, r, &out) == XSAM_ORDER_ERROR, "segment before set_image");
    std::vector<uint8_t> rgb(32 * 40 * 3, 128);
    CHECK(xsam_set_image(s, rgb.data(), 32, 40) == XSAM_OK, xsam_last_error());
    CHECK(xsam_segment(s, r, &out) == XSAM_INVALID_ARGUMENT, "referring without text");
    CHECK(std::string(xsam_last_error()).find("non-empty text") != std::string::npos, xsam_last_error());
    xsam_request* p = xsam_request_new("interactive");
    xsam_request_add_point(p, 500, 3);
    CHECK(xsam_segment(s, p, &out) == XSAM_INVALID_ARGUMENT, "point outside the image");
    CHECK(xsam_request_set_text(r, "the red circle") == XSAM_OK, "set text");
    CHECK(xsam_segment(s, r, &out) == XSAM_OK, xsam_last_error());
    CHECK(out && xsam_result_count(out) == 1 && xsam_result_height(out) == 32 && xsam_result_width(out) == 40,
          "one referring mask at the image size");
    CHECK(out && std::string(xsam_result_label(out, 0)) == "the red circle", "label");
    xsam_result_free(out);
    xsam_request_free(p);
    xsam_request_free(r);
    xsam_close(s);
  }
  return finish("bundle");
}
