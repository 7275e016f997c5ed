// Loads a golden-vector file from shared/golden (directory set by CMake).
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include "smaint/json_reader.hpp"

#ifndef SMAINT_GOLDEN_DIR
#error "SMAINT_GOLDEN_DIR must name shared/golden"
#endif

inline smaint::JsonValue load_golden(const std::string& name) {
  const std::string path = std::string(SMAINT_GOLDEN_DIR) + "/" + name;
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  smaint::JsonLimits limits;
  limits.max_bytes = 1 << 22;
  limits.max_depth = 32;
  auto r = smaint::parse_json(ss.str(), limits);
  if (!r.ok) {
    std::printf("cannot read %s: %s\n", path.c_str(), r.error.c_str());
    std::exit(1);
  }
  return r.value;
}
