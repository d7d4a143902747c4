// SHA-256 of a file, as hex: the bundle's manifest lists one per file (spec/bundle.py sha256_file).
#pragma once

#include <string>

#include "status.hpp"

namespace xsam {

Status Sha256File(const std::string& path, std::string* hex);
std::string Sha256Hex(const std::string& data);

}  // namespace xsam
