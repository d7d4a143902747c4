#include "xsam/session.hpp"

namespace xsam {

Status Session::Open(const std::string& bundle, const SessionOptions& options, std::unique_ptr<Session>* out) {
  Manifest manifest;
  XSAM_RETURN_IF_ERROR(LoadBundle(bundle, options.verify_checksums, &manifest));
  bool has_et = false;
  for (const std::string& b : manifest.backends()) has_et = has_et || b == "executorch";
  if (!has_et) {
    std::string have;
    for (const std::string& b : manifest.backends()) have += (have.empty() ? "" : ", ") + b;
    return BundleError("bundle has no executorch graphs (it was exported for: " + have +
                       "); export with --backend executorch for the native runtime");
  }
  std::unique_ptr<Session> session(new Session());
  XSAM_RETURN_IF_ERROR(session->predictor_.Open(manifest, options.max_new_tokens));
  *out = std::move(session);
  return Status::Ok();
}

}  // namespace xsam
