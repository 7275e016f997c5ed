#include "smaint/telemetry.hpp"

#include <cmath>

#include "smaint/json_writer.hpp"

namespace smaint {

namespace {

bool lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

EncodeResult fail(std::string why) {
  EncodeResult r;
  r.error = std::move(why);
  return r;
}

}  // namespace

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 64 || !lower_alnum(id[0])) return false;
  for (const char c : id) {
    if (!lower_alnum(c) && c != '_' && c != '-') return false;
  }
  return true;
}

bool valid_boot_id(std::string_view boot) {
  if (boot.size() < 8 || boot.size() > 32) return false;
  for (const char c : boot) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool valid_metric_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || !(name[0] >= 'a' && name[0] <= 'z')) return false;
  for (const char c : name) {
    if (!lower_alnum(c) && c != '_') return false;
  }
  return true;
}

EncodeResult encode_telemetry(std::string_view device, std::string_view boot, std::uint32_t seq,
                              std::uint64_t ts_ms, std::uint64_t uptime_ms, bool synced,
                              std::string_view type, const MetricList& metrics) {
  if (!valid_id(device)) return fail("device: not a valid id");
  if (!valid_boot_id(boot)) return fail("boot: must be 8-32 lowercase hex digits");
  if (ts_ms > kMaxEpochMs) return fail("ts_ms: above 2**53");
  if (uptime_ms > kMaxEpochMs) return fail("uptime_ms: above 2**53");
  if (type.size() > 32) return fail("type: longer than 32 characters");
  if (metrics.empty()) return fail("metrics: none");
  if (metrics.size() > 64) return fail("metrics: more than 64");
  for (std::size_t i = 0; i < metrics.size(); ++i) {
    const auto& [name, value] = metrics[i];
    if (!valid_metric_name(name)) return fail("metrics." + name + ": not a valid metric name");
    if (!std::isfinite(value)) return fail("metrics." + name + ": not a finite number");
    for (std::size_t j = 0; j < i; ++j) {
      if (metrics[j].first == name) return fail("metrics." + name + ": duplicate");
    }
  }
  EncodeResult r;
  r.payload.reserve(96 + 32 * metrics.size());
  JsonWriter w(r.payload);
  w.begin_object();
  w.key("v"); w.uint(1);
  w.key("device"); w.string(device);
  w.key("boot"); w.string(boot);
  w.key("seq"); w.uint(seq);
  w.key("ts_ms"); w.uint(ts_ms);
  w.key("uptime_ms"); w.uint(uptime_ms);
  w.key("synced"); w.boolean(synced);
  w.key("type"); w.string(type);
  w.key("metrics");
  w.begin_object();
  for (const auto& [name, value] : metrics) {
    w.key(name);
    w.number(value == 0.0 ? 0.0 : value);  // -0 is sent as 0
  }
  w.end_object();
  w.end_object();
  r.ok = true;
  return r;
}

EncodeResult encode_reading(const Identity& id, const Reading& r) {
  if (id.profile == nullptr) return fail("type: no sensor profile");
  MetricList metrics;
  for (std::size_t i = 0; i < id.profile->metric_count; ++i) {
    if (r.mask & (1U << i)) metrics.emplace_back(id.profile->metrics[i].name, r.values[i]);
  }
  return encode_telemetry(id.device, id.boot, r.seq, r.synced ? r.ts_ms : 0, r.uptime_ms,
                          r.synced, id.profile->name, metrics);
}

EncodeResult encode_status(const Identity& id, bool online, std::uint64_t ts_ms,
                           std::string_view fw, std::uint32_t interval_ms) {
  if (!valid_id(id.device)) return fail("device: not a valid id");
  if (!valid_boot_id(id.boot)) return fail("boot: must be 8-32 lowercase hex digits");
  if (ts_ms > kMaxEpochMs) return fail("ts_ms: above 2**53");
  if (fw.size() > 32) return fail("fw: longer than 32 characters");
  if (interval_ms != 0 && (interval_ms < 10 || interval_ms > 86400000)) {
    return fail("interval_ms: outside 10..86400000");
  }
  EncodeResult r;
  JsonWriter w(r.payload);
  w.begin_object();
  w.key("v"); w.uint(1);
  w.key("device"); w.string(id.device);
  w.key("boot"); w.string(id.boot);
  w.key("state"); w.string(online ? "online" : "offline");
  w.key("ts_ms"); w.uint(ts_ms);
  if (id.profile != nullptr) { w.key("type"); w.string(id.profile->name); }
  if (!fw.empty()) { w.key("fw"); w.string(fw); }
  if (interval_ms != 0) { w.key("interval_ms"); w.uint(interval_ms); }
  w.end_object();
  r.ok = true;
  return r;
}

}  // namespace smaint
