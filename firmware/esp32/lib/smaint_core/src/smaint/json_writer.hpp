// Compact JSON output: the exact bytes devices put on the wire.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace smaint {

// Shortest decimal text that parses back to exactly `value` (finite only), formatted as
// std::to_chars(first, last, value) does: fixed or scientific, whichever is shorter (fixed on
// a tie), e.g. 21.5 -> "21.5", 100.0 -> "100", 1e-7 -> "1e-07". Uses std::to_chars where the
// standard library has it, and format_double_portable otherwise (older ESP32 toolchains).
std::string format_double(double value);

// The same text built from printf/strtod only; the host tests check it equals std::to_chars.
std::string format_double_portable(double value);

// Appends JSON tokens to a string. Caller keeps the structure right (no validation here).
class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}
  void begin_object() { comma(); out_ += '{'; first_ = true; }
  void end_object() { out_ += '}'; first_ = false; }
  void key(std::string_view k);
  void string(std::string_view s);
  void uint(std::uint64_t v);
  void number(double v);  // finite only: the caller checks
  void boolean(bool b);

 private:
  void comma();
  std::string& out_;
  bool first_ = true;
  bool after_key_ = false;
};

// Appends `s` as a JSON string literal (quotes, escapes) to `out`.
void append_json_string(std::string& out, std::string_view s);

}  // namespace smaint
