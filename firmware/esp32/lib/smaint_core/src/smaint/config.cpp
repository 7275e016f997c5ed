#include "smaint/config.hpp"

#include "smaint/json_reader.hpp"

namespace smaint {

namespace {

ConfigResult reject(std::string why) {
  ConfigResult r;
  r.error = std::move(why);
  return r;
}

bool interval_value(const JsonValue& v, std::uint32_t& out) {
  if (!v.is_uint() || v.integer < kMinIntervalMs || v.integer > kMaxIntervalMs) return false;
  out = static_cast<std::uint32_t>(v.integer);
  return true;
}

const std::string kIntervalRule = "must be an integer from 10 to 86400000 (ms)";

}  // namespace

NodeConfig default_config(const ProfileDef& profile) {
  NodeConfig c;
  c.interval_ms = profile.sample_interval_ms;
  c.enabled_mask = static_cast<std::uint16_t>((1U << profile.metric_count) - 1U);
  return c;
}

ConfigResult parse_config(std::string_view payload, const ProfileDef& profile) {
  ConfigResult r;
  r.config = default_config(profile);
  if (payload.empty()) {
    r.ok = true;
    return r;
  }
  JsonLimits limits;
  limits.max_bytes = 4096;
  limits.max_depth = 4;
  const JsonParseResult parsed = parse_json(payload, limits);
  if (!parsed.ok) return reject("payload is not valid JSON: " + parsed.error);
  const JsonValue& root = parsed.value;
  if (root.kind != JsonValue::Kind::Object) return reject("payload must be a JSON object");

  for (const auto& [key, val] : root.members) {
    if (key == "v") {
      if (!val.is_uint() || val.integer != 1) return reject("v: must be 1");
    } else if (key == "interval_ms") {
      if (!interval_value(val, r.config.interval_ms)) return reject("interval_ms: " + kIntervalRule);
    } else if (key == "enabled") {
      if (val.kind != JsonValue::Kind::Array) return reject("enabled: must be a list of metric names");
      if (val.items.empty()) return reject("enabled: must name at least one metric");
      std::uint16_t mask = 0;
      for (const auto& item : val.items) {
        if (item.kind != JsonValue::Kind::String) return reject("enabled: must be a list of metric names");
        const int idx = profile.index_of(item.text);
        if (idx < 0) {
          return reject("enabled: '" + item.text + "' is not a metric of sensor type '" +
                        profile.name + "'");
        }
        const auto bit = static_cast<std::uint16_t>(1U << idx);
        if (mask & bit) return reject("enabled: '" + item.text + "' is listed twice");
        mask = static_cast<std::uint16_t>(mask | bit);
      }
      r.config.enabled_mask = mask;
    } else if (key == "sensor_ms") {
      if (val.kind != JsonValue::Kind::Object) return reject("sensor_ms: must be an object metric -> ms");
      for (const auto& [metric, period] : val.members) {
        const int idx = profile.index_of(metric);
        if (idx < 0) {
          return reject("sensor_ms." + metric + ": not a metric of sensor type '" + profile.name + "'");
        }
        if (!interval_value(period, r.config.sensor_ms[static_cast<std::size_t>(idx)])) {
          return reject("sensor_ms." + metric + ": " + kIntervalRule);
        }
      }
    } else {
      return reject("unknown field '" + key + "'");
    }
  }
  if (root.find("v") == nullptr) return reject("v: missing");
  r.ok = true;
  return r;
}

}  // namespace smaint
