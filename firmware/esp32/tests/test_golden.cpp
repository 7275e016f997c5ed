// The C++ encoder against shared/golden: exact bytes for valid vectors, refusal for invalid
// ones it can express, the same sensor profiles as shared/sensors.py, and config cases.
#include <cmath>
#include <limits>

#include "check.hpp"
#include "golden_file.hpp"
#include "smaint/config.hpp"
#include "smaint/telemetry.hpp"

using smaint::JsonValue;

namespace {

double metric_value(const JsonValue& v) {
  if (v.kind == JsonValue::Kind::String) {
    if (v.text == "NaN") return std::numeric_limits<double>::quiet_NaN();
    if (v.text == "Infinity") return std::numeric_limits<double>::infinity();
    if (v.text == "-Infinity") return -std::numeric_limits<double>::infinity();
  }
  return v.number;
}

smaint::EncodeResult encode_input(const JsonValue& in) {
  smaint::MetricList metrics;
  for (const auto& [name, val] : in.find("metrics")->members) metrics.emplace_back(name, metric_value(val));
  return smaint::encode_telemetry(in.find("device")->text, in.find("boot")->text,
                                  static_cast<std::uint32_t>(in.find("seq")->integer),
                                  in.find("ts_ms")->integer, in.find("uptime_ms")->integer,
                                  in.find("synced")->boolean, in.find("type")->text, metrics);
}

const JsonValue& telemetry_doc() {
  static const JsonValue doc = load_golden("telemetry.json");
  return doc;
}

}  // namespace

TEST(telemetry_valid_exact_bytes) {
  const JsonValue* cases = telemetry_doc().find("telemetry_valid");
  CHECK(cases != nullptr && cases->items.size() >= 5);
  for (const auto& c : cases->items) {
    const auto r = encode_input(*c.find("input"));
    CHECK(r.ok);
    if (r.payload != c.find("json")->text) std::printf("  case: %s\n", c.find("name")->text.c_str());
    CHECK_EQ(r.payload, c.find("json")->text);
  }
}

TEST(telemetry_valid_via_reading_and_profile) {
  // The path the node uses: a Reading in profile order, encoded against its profile.
  for (const auto& c : telemetry_doc().find("telemetry_valid")->items) {
    const JsonValue& in = *c.find("input");
    smaint::Identity id{in.find("device")->text, in.find("boot")->text,
                        smaint::find_profile(in.find("type")->text)};
    CHECK(id.profile != nullptr);
    if (id.profile == nullptr) continue;
    smaint::Reading r;
    r.seq = static_cast<std::uint32_t>(in.find("seq")->integer);
    r.ts_ms = in.find("ts_ms")->integer;
    r.uptime_ms = in.find("uptime_ms")->integer;
    r.synced = in.find("synced")->boolean;
    for (const auto& [name, val] : in.find("metrics")->members) {
      const int idx = id.profile->index_of(name);
      CHECK(idx >= 0);
      if (idx < 0) continue;
      r.mask = static_cast<std::uint16_t>(r.mask | (1U << idx));
      r.values[static_cast<std::size_t>(idx)] = val.number;
    }
    const auto enc = smaint::encode_reading(id, r);
    CHECK(enc.ok);
    CHECK_EQ(enc.payload, c.find("json")->text);
  }
}

TEST(telemetry_invalid_refused_by_encoder) {
  int checked = 0;
  for (const auto& c : telemetry_doc().find("telemetry_invalid")->items) {
    const JsonValue* in = c.find("encoder_input");
    if (in == nullptr) continue;  // only the decoder can see this one (wrong JSON types)
    const auto r = encode_input(*in);
    if (r.ok) std::printf("  case accepted: %s\n", c.find("name")->text.c_str());
    CHECK(!r.ok);
    // The encoder's reason names the same field as the Python decoder.
    const std::string field = c.find("field")->text;
    CHECK_EQ(r.error.substr(0, field.size()), field);
    ++checked;
  }
  CHECK(checked >= 5);
}

TEST(status_valid_exact_bytes) {
  for (const auto& c : telemetry_doc().find("status_valid")->items) {
    const JsonValue& in = *c.find("input");
    smaint::Identity id{in.find("device")->text, in.find("boot")->text,
                        smaint::find_profile(in.find("type")->text)};
    const auto r = smaint::encode_status(id, in.find("state")->text == "online", in.find("ts_ms")->integer,
                                         in.find("fw")->text,
                                         static_cast<std::uint32_t>(in.find("interval_ms")->integer));
    CHECK(r.ok);
    CHECK_EQ(r.payload, c.find("json")->text);
  }
}

TEST(profiles_match_shared_sensors) {
  const auto& golden = telemetry_doc().find("profiles")->items;
  CHECK_EQ(golden.size(), static_cast<std::size_t>(smaint::profiles_end() - smaint::profiles_begin()));
  for (const auto& gp : golden) {
    const smaint::ProfileDef* p = smaint::find_profile(gp.find("name")->text);
    CHECK(p != nullptr);
    if (p == nullptr) continue;
    CHECK_EQ(p->sample_interval_ms, static_cast<unsigned>(gp.find("sample_interval_ms")->number));
    const auto& metrics = gp.find("metrics")->items;
    CHECK_EQ(p->metric_count, metrics.size());
    for (std::size_t i = 0; i < metrics.size() && i < p->metric_count; ++i) {
      CHECK_EQ(std::string(p->metrics[i].name), metrics[i].find("name")->text);
      CHECK_EQ(std::string(p->metrics[i].unit), metrics[i].find("unit")->text);
      CHECK_EQ(p->metrics[i].low, metrics[i].find("low")->number);
      CHECK_EQ(p->metrics[i].high, metrics[i].find("high")->number);
    }
  }
}

TEST(config_valid_cases) {
  const JsonValue doc = load_golden("config.json");
  for (const auto& c : doc.find("valid")->items) {
    const smaint::ProfileDef* p = smaint::find_profile(c.find("type")->text);
    const auto r = smaint::parse_config(c.find("payload")->text, *p);
    if (!r.ok) std::printf("  case %s: %s\n", c.find("name")->text.c_str(), r.error.c_str());
    CHECK(r.ok);
    const JsonValue& e = *c.find("expect");
    CHECK_EQ(r.config.interval_ms, static_cast<std::uint32_t>(e.find("interval_ms")->integer));
    std::uint16_t mask = 0;
    for (const auto& m : e.find("enabled")->items) mask = static_cast<std::uint16_t>(mask | (1U << p->index_of(m.text)));
    CHECK_EQ(r.config.enabled_mask, mask);
    std::array<std::uint32_t, smaint::kMaxMetrics> sensor_ms{};
    for (const auto& [m, v] : e.find("sensor_ms")->members) {
      sensor_ms[static_cast<std::size_t>(p->index_of(m))] = static_cast<std::uint32_t>(v.integer);
    }
    CHECK(r.config.sensor_ms == sensor_ms);
  }
}

TEST(config_invalid_cases_rejected_with_reason) {
  const JsonValue doc = load_golden("config.json");
  int n = 0;
  for (const auto& c : doc.find("invalid")->items) {
    const smaint::ProfileDef* p = smaint::find_profile(c.find("type")->text);
    const auto r = smaint::parse_config(c.find("payload")->text, *p);
    const std::string want = c.find("error_starts_with")->text;
    if (r.ok || r.error.rfind(want, 0) != 0) {
      std::printf("  case %s: ok=%d error=%s\n", c.find("name")->text.c_str(), r.ok, r.error.c_str());
    }
    CHECK(!r.ok);
    CHECK_EQ(r.error.substr(0, want.size()), want);
    ++n;
  }
  CHECK(n >= 20);
}

CHECK_MAIN
