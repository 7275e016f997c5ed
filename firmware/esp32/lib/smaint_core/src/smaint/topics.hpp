// The MQTT topic tree, mirroring shared/topics.py (checked by tests/test_contract.py).
#pragma once

#include <string>
#include <string_view>

namespace smaint::topics {

inline constexpr std::string_view kRoot = "smaint/v1";

inline std::string device_topic(std::string_view device, std::string_view channel) {
  std::string t(kRoot);
  t += "/dev/";
  t += device;
  t += '/';
  t += channel;
  return t;
}
inline std::string telemetry(std::string_view device) { return device_topic(device, "telemetry"); }
inline std::string status(std::string_view device) { return device_topic(device, "status"); }
inline std::string config(std::string_view device) { return device_topic(device, "config"); }

}  // namespace smaint::topics
