#include "smaint/profiles.hpp"

#include <iterator>

namespace smaint {

namespace {

// Keep in the order of shared/sensors.py: it is the payload's metric order and the models'
// feature order.
constexpr MetricDef kMotor[] = {
    {"temperature_c", "°C", -40.0, 200.0},
    {"vibration_rms_g", "g", 0.0, 50.0},
    {"current_a", "A", 0.0, 500.0},
};
constexpr MetricDef kMill[] = {
    {"air_temperature_k", "K", 230.0, 350.0},
    {"process_temperature_k", "K", 230.0, 400.0},
    {"rotational_speed_rpm", "rpm", 0.0, 30000.0},
    {"torque_nm", "N·m", 0.0, 500.0},
    {"tool_wear_min", "min", 0.0, 10000.0},
};
constexpr MetricDef kTurbofan[] = {
    {"t24_r", "°R", 0.0, 2000.0},      {"t30_r", "°R", 0.0, 3000.0},
    {"t50_r", "°R", 0.0, 3000.0},      {"p30_psia", "psia", 0.0, 1000.0},
    {"nf_rpm", "rpm", 0.0, 10000.0},   {"nc_rpm", "rpm", 0.0, 20000.0},
    {"ps30_psia", "psia", 0.0, 1000.0}, {"phi", "pps/psi", 0.0, 1000.0},
};

const ProfileDef kProfiles[] = {
    {"motor", kMotor, std::size(kMotor), 1000},
    {"mill", kMill, std::size(kMill), 1000},
    {"turbofan", kTurbofan, std::size(kTurbofan), 1000},
};

static_assert(std::size(kTurbofan) <= kMaxMetrics, "raise kMaxMetrics");

}  // namespace

int ProfileDef::index_of(std::string_view metric) const {
  for (std::size_t i = 0; i < metric_count; ++i) {
    if (metric == metrics[i].name) return static_cast<int>(i);
  }
  return -1;
}

const ProfileDef* find_profile(std::string_view name) {
  for (const auto& p : kProfiles) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

const ProfileDef* profiles_begin() { return std::begin(kProfiles); }
const ProfileDef* profiles_end() { return std::end(kProfiles); }

}  // namespace smaint
