// Sensor profiles, mirroring shared/sensors.py (checked by tests/test_contract.py).
#pragma once

#include <cstddef>
#include <string_view>

namespace smaint {

struct MetricDef {
  const char* name;
  const char* unit;
  double low;
  double high;
};

constexpr std::size_t kMaxMetrics = 8;  // the widest profile (turbofan) has 8

struct ProfileDef {
  const char* name;
  const MetricDef* metrics;
  std::size_t metric_count;
  unsigned sample_interval_ms;

  // Index of the metric called `name`, or -1.
  int index_of(std::string_view metric) const;
};

// The profile called `name`, or nullptr.
const ProfileDef* find_profile(std::string_view name);

// All profiles, for tests and listings.
const ProfileDef* profiles_begin();
const ProfileDef* profiles_end();

}  // namespace smaint
