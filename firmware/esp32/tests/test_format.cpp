// Number formatting: shortest round trip, and the portable path equals std::to_chars.
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "check.hpp"
#include "smaint/backoff.hpp"
#include "smaint/json_writer.hpp"

namespace {

std::string to_chars_text(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

double from_bits(std::uint64_t bits) {
  double d = 0;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

}  // namespace

TEST(known_values) {
  CHECK_EQ(smaint::format_double(21.5), "21.5");
  CHECK_EQ(smaint::format_double(0.1), "0.1");
  CHECK_EQ(smaint::format_double(100.0), "100");
  CHECK_EQ(smaint::format_double(10000.0), "10000");  // tie with 1e+04: fixed
  CHECK_EQ(smaint::format_double(1e-7), "1e-07");
  CHECK_EQ(smaint::format_double(0.0001), "1e-04");
  CHECK_EQ(smaint::format_double(-12.75), "-12.75");
  CHECK_EQ(smaint::format_double(1e300), "1e+300");
  CHECK_EQ(smaint::format_double(5e-324), "5e-324");
  CHECK_EQ(smaint::format_double(0.1 + 0.2), "0.30000000000000004");
}

TEST(portable_equals_to_chars_typical) {
  for (int i = -100000; i <= 100000; i += 7) {
    const double v = i / 1000.0;
    CHECK_EQ(smaint::format_double_portable(v), to_chars_text(v));
  }
  for (int e = -320; e <= 308; ++e) {
    const double v = std::pow(10.0, e);
    CHECK_EQ(smaint::format_double_portable(v), to_chars_text(v));
    CHECK_EQ(smaint::format_double_portable(v * 1.5), to_chars_text(v * 1.5));
  }
  const double specials[] = {0.0, -0.0, std::numeric_limits<double>::max(),
                             std::numeric_limits<double>::min(),
                             std::numeric_limits<double>::denorm_min(), 123456789012345680000.0,
                             9007199254740993.0, 1.0 / 3.0, 2.0 / 3.0, 499.99999999999994};
  for (const double v : specials) CHECK_EQ(smaint::format_double_portable(v), to_chars_text(v));
}

TEST(portable_equals_to_chars_random_bits) {
  smaint::SplitMix64 rng(42);
  int compared = 0;
  for (int i = 0; i < 200000; ++i) {
    const double v = from_bits(rng.next());
    if (!std::isfinite(v)) continue;
    const std::string a = smaint::format_double_portable(v);
    const std::string b = to_chars_text(v);
    if (a != b) {
      CHECK_EQ(a, b);
      break;
    }
    ++compared;
  }
  CHECK(compared > 190000);
}

TEST(round_trips) {
  smaint::SplitMix64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    const double v = from_bits(rng.next());
    if (!std::isfinite(v)) continue;
    const std::string s = smaint::format_double(v);
    CHECK(std::strtod(s.c_str(), nullptr) == v);
  }
}

TEST(json_string_escapes) {
  std::string out;
  smaint::append_json_string(out, std::string("a\"b\\c\n\x01", 7));
  CHECK_EQ(out, "\"a\\\"b\\\\c\\n\\u0001\"");
}

CHECK_MAIN
