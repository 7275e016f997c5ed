// The retained per-device config on smaint/v1/dev/<device>/config (gateway -> device):
//
//   {"v":1,"interval_ms":1000,"enabled":["temperature_c","current_a"],"sensor_ms":{"temperature_c":5000}}
//
// v is required; every other field is optional and falls back to the profile default (the
// retained message is the whole desired state, not a patch). An empty payload (retained
// message cleared) means "back to defaults". Anything else that is wrong rejects the whole
// message with a reason naming the field; the node keeps running its current config.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "smaint/profiles.hpp"

namespace smaint {

constexpr std::uint32_t kMinIntervalMs = 10;
constexpr std::uint32_t kMaxIntervalMs = 86400000;  // one day, as DeviceStatus.interval_ms

struct NodeConfig {
  std::uint32_t interval_ms = 1000;  // publish period
  std::uint16_t enabled_mask = 0;    // bit i: profile metric i is sampled and sent
  std::array<std::uint32_t, kMaxMetrics> sensor_ms{};  // per-sensor sample period; 0: interval_ms

  std::uint32_t sensor_period_ms(std::size_t metric) const {
    return sensor_ms[metric] != 0 ? sensor_ms[metric] : interval_ms;
  }
  bool operator==(const NodeConfig& o) const {
    return interval_ms == o.interval_ms && enabled_mask == o.enabled_mask && sensor_ms == o.sensor_ms;
  }
  bool operator!=(const NodeConfig& o) const { return !(*this == o); }
};

// The profile's defaults: every metric enabled, its nominal interval.
NodeConfig default_config(const ProfileDef& profile);

struct ConfigResult {
  bool ok = false;
  NodeConfig config;
  std::string error;  // "field: reason" when !ok
};

ConfigResult parse_config(std::string_view payload, const ProfileDef& profile);

}  // namespace smaint
