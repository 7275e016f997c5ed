#include "smaint/json_writer.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#if __has_include(<version>)
#include <version>  // GCC 9+; the ESP32 Arduino 2.x toolchain (GCC 8) has none
#endif

#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
#include <charconv>
#define SMAINT_HAVE_TO_CHARS 1
#else
#define SMAINT_HAVE_TO_CHARS 0
#endif

namespace smaint {

namespace {

// Shortest significant digits (no dot, no trailing zeros) and decimal exponent of the first
// digit, found by increasing printf precision until strtod gives the same double back.
void shortest_digits(double value, std::string& digits, int& exponent) {
  char buf[40];
  for (int precision = 0; precision <= 16; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*e", precision, value);
    if (precision == 16 || std::strtod(buf, nullptr) == value) break;
  }
  // buf is "d.ddddde+XX" (no sign: value is positive here).
  digits.clear();
  const char* p = buf;
  for (; *p != 'e'; ++p) {
    if (*p != '.') digits += *p;
  }
  exponent = std::atoi(p + 1);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
}

std::string scientific(const std::string& digits, int exponent) {
  std::string s(1, digits[0]);
  if (digits.size() > 1) {
    s += '.';
    s.append(digits, 1, std::string::npos);
  }
  s += 'e';
  s += exponent < 0 ? '-' : '+';
  const int mag = exponent < 0 ? -exponent : exponent;
  if (mag < 10) s += '0';
  s += std::to_string(mag);
  return s;
}

std::string fixed(double value, const std::string& digits, int exponent) {
  const int n = static_cast<int>(digits.size());
  if (exponent >= n - 1) {
    // An integer: std::to_chars prints its exact value (which differs from the shortest
    // digits padded with zeros above 2**53), and so does printf's %.0f.
    char buf[320];
    std::snprintf(buf, sizeof buf, "%.0f", value);
    return buf;
  }
  if (exponent >= 0) {
    const auto int_len = static_cast<std::size_t>(exponent + 1);
    return digits.substr(0, int_len) + "." + digits.substr(int_len);
  }
  return "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
}

}  // namespace

std::string format_double_portable(double value) {
  if (value == 0.0) return std::signbit(value) ? "-0" : "0";
  const bool negative = value < 0;
  std::string digits;
  int exponent = 0;
  shortest_digits(negative ? -value : value, digits, exponent);
  std::string f = fixed(negative ? -value : value, digits, exponent);
  std::string e = scientific(digits, exponent);
  std::string out = negative ? "-" : "";
  out += (e.size() < f.size()) ? e : f;
  return out;
}

std::string format_double(double value) {
#if SMAINT_HAVE_TO_CHARS
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, res.ptr);
#else
  return format_double_portable(value);
#endif
}

void append_json_string(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out += hex[u >> 4];
          out += hex[u & 0xF];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

void JsonWriter::comma() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_) out_ += ',';
  first_ = false;
}

void JsonWriter::key(std::string_view k) {
  comma();
  append_json_string(out_, k);
  out_ += ':';
  after_key_ = true;
}

void JsonWriter::string(std::string_view s) { comma(); append_json_string(out_, s); }
void JsonWriter::uint(std::uint64_t v) { comma(); out_ += std::to_string(v); }
void JsonWriter::number(double v) { comma(); out_ += format_double(v); }
void JsonWriter::boolean(bool b) { comma(); out_ += b ? "true" : "false"; }

}  // namespace smaint
