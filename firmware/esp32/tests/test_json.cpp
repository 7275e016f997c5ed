// The JSON reader and the config parser never crash on hostile input.
#include <string>

#include "check.hpp"
#include "smaint/backoff.hpp"
#include "smaint/config.hpp"
#include "smaint/json_reader.hpp"

TEST(reader_basics) {
  auto r = smaint::parse_json(R"( {"a":[1,-2,3.5e2,true,false,null],"b":"x\u00e9\ud83d\ude00"} )");
  CHECK(r.ok);
  const auto* a = r.value.find("a");
  CHECK(a != nullptr && a->items.size() == 6);
  CHECK(a->items[0].is_uint());
  CHECK(!a->items[1].is_uint());
  CHECK(!a->items[2].is_integer);
  CHECK_EQ(a->items[2].number, 350.0);
  CHECK_EQ(r.value.find("b")->text, "x\xc3\xa9\xf0\x9f\x98\x80");
}

TEST(reader_rejects) {
  const char* bad[] = {"", " ", "{", "}", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "-", "1e", "tru",
                       "\"abc", "{\"a\" 1}", "[1 2]", "nan", "Infinity", "1e999", "\"\\u12\"",
                       "{\"a\":1}{}"};
  for (const char* s : bad) {
    const auto r = smaint::parse_json(s);
    if (r.ok) std::printf("  accepted: %s\n", s);
    CHECK(!r.ok);
    CHECK(!r.error.empty());
  }
}

TEST(reader_depth_and_size_limits) {
  std::string deep(100000, '[');
  CHECK(!smaint::parse_json(deep).ok);  // size limit first
  smaint::JsonLimits l;
  l.max_bytes = 1 << 20;
  l.max_depth = 16;
  const auto r = smaint::parse_json(deep, l);
  CHECK(!r.ok);
  CHECK(r.error.find("deep") != std::string::npos);
}

TEST(config_fuzz_never_crashes) {
  const smaint::ProfileDef& motor = *smaint::find_profile("motor");
  const std::string seed = R"({"v":1,"interval_ms":500,"enabled":["temperature_c","current_a"],"sensor_ms":{"temperature_c":5000}})";
  smaint::SplitMix64 rng(1234);
  int accepted = 0;
  int rejected = 0;
  for (int i = 0; i < 50000; ++i) {
    std::string s = seed;
    const int edits = 1 + static_cast<int>(rng.upto(4));
    for (int e = 0; e < edits; ++e) {
      const auto pos = static_cast<std::size_t>(rng.upto(s.size() - 1));
      switch (rng.upto(3)) {
        case 0: s[pos] = static_cast<char>(rng.upto(255)); break;
        case 1: s.erase(pos, 1 + rng.upto(5)); break;
        case 2: s.insert(pos, 1, "{}[]\",:0-e.\\"[rng.upto(11)]); break;
        default: s.resize(pos); break;
      }
      if (s.empty()) break;
    }
    const auto r = smaint::parse_config(s, motor);
    if (r.ok) {
      ++accepted;
      CHECK(r.config.interval_ms >= smaint::kMinIntervalMs && r.config.interval_ms <= smaint::kMaxIntervalMs);
      CHECK(r.config.enabled_mask != 0);
      CHECK((r.config.enabled_mask & ~0x7U) == 0);
    } else {
      ++rejected;
      CHECK(!r.error.empty());
    }
  }
  CHECK(rejected > 1000);
  std::printf("  fuzz: %d accepted, %d rejected\n", accepted, rejected);
}

CHECK_MAIN
