// The device messages exactly as shared/schemas.py defines them (Telemetry, DeviceStatus).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "smaint/profiles.hpp"

namespace smaint {

constexpr std::uint64_t kMaxEpochMs = 9007199254740992ULL;  // 2**53, the schema's bound

// ^[a-z0-9][a-z0-9_-]{0,63}$ (shared/topics.py ID_PATTERN)
bool valid_id(std::string_view id);
// ^[0-9a-f]{8,32}$
bool valid_boot_id(std::string_view boot);
// ^[a-z][a-z0-9_]{0,63}$
bool valid_metric_name(std::string_view name);

// One sample, compact enough to keep hundreds in the outbox: values are indexed by the
// profile's metric order and `mask` says which are present.
struct Reading {
  std::uint32_t seq = 0;
  std::uint64_t ts_ms = 0;      // epoch ms if synced, else 0
  std::uint64_t uptime_ms = 0;  // ms since boot at sampling
  bool synced = false;
  std::uint16_t mask = 0;
  std::array<double, kMaxMetrics> values{};
};

struct Identity {
  std::string device;
  std::string boot;
  const ProfileDef* profile = nullptr;
};

struct EncodeResult {
  bool ok = false;
  std::string payload;  // compact JSON when ok
  std::string error;    // reason when !ok
};

using MetricList = std::vector<std::pair<std::string, double>>;

// Telemetry from explicit fields, metrics in the given order. Refuses what the Python decoder
// would refuse for structural reasons (bad ids, non-finite numbers, out-of-bound integers,
// 0 or more than 64 metrics); it does not check metric names against a profile.
EncodeResult encode_telemetry(std::string_view device, std::string_view boot, std::uint32_t seq,
                              std::uint64_t ts_ms, std::uint64_t uptime_ms, bool synced,
                              std::string_view type, const MetricList& metrics);

// Telemetry for a Reading of `id.profile`, metrics in profile order.
EncodeResult encode_reading(const Identity& id, const Reading& r);

// DeviceStatus; interval_ms 0 leaves it out. fw empty leaves it out.
EncodeResult encode_status(const Identity& id, bool online, std::uint64_t ts_ms,
                           std::string_view fw, std::uint32_t interval_ms);

}  // namespace smaint
