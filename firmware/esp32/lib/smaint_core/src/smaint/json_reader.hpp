// A small, strict JSON reader for untrusted input (retained config, provisioning files, golden
// vectors). Bounded depth and size, no exceptions thrown to the caller: errors come back with a
// reason and byte offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace smaint {

class JsonValue {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0.0;
  bool is_integer = false;      // written without '.', 'e' or 'E'
  bool negative = false;        // integer written with a leading '-'
  std::uint64_t integer = 0;    // magnitude, valid when is_integer and fits
  bool integer_fits = false;    // magnitude fitted in 64 bits
  std::string text;             // String: the decoded string; Number: the literal as written
  std::vector<JsonValue> items;                           // Array
  std::vector<std::pair<std::string, JsonValue>> members;  // Object, in document order

  // Member called `name`, or nullptr.
  const JsonValue* find(std::string_view name) const;
  // Non-negative integer that fits in 64 bits (not 1.0, not "1").
  bool is_uint() const { return kind == Kind::Number && is_integer && !negative && integer_fits; }
  static const char* kind_name(Kind k);
};

struct JsonParseResult {
  bool ok = false;
  JsonValue value;
  std::string error;  // reason, with the byte offset, when !ok
};

struct JsonLimits {
  std::size_t max_bytes = 16384;
  int max_depth = 16;
};

// Parses exactly one JSON value (whitespace around allowed, nothing else after it).
JsonParseResult parse_json(std::string_view text, JsonLimits limits = {});

}  // namespace smaint
