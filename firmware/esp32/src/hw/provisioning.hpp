// Per-device settings: Wi-Fi, broker, credentials, pins. Never compiled in: read from
// LittleFS /provision.json (written with `pio run -t uploadfs`) or, failing that, from NVS
// (namespace "smaint", key "provision", the same JSON), so one firmware image serves every node.
#pragma once

#include <cstdint>
#include <string>

namespace smaint::esp32 {

struct Provision {
  std::string device;
  std::string type = "motor";
  std::string wifi_ssid;
  std::string wifi_password;
  std::string mqtt_uri;  // mqtts://host:8883 (TLS) or mqtt://host:1883 (lab only)
  std::string mqtt_username;
  std::string mqtt_password;
  std::string ca_pem;    // contents of ca_file
  std::string ntp_server = "pool.ntp.org";
  std::uint32_t ring_size = 600;
  int pin_onewire = 4;
  int pin_i2c_sda = 21;
  int pin_i2c_scl = 22;
  int pin_ct_adc = 34;
  double ct_amps_per_volt = 30.0;  // SCT-013-030: 30 A per 1 V RMS
};

// Loads and validates the provisioning; false with `error` set when the node cannot run.
bool load_provision(Provision& out, std::string& error);

// Parses provisioning JSON (exposed for the serial console's "provision" command).
bool parse_provision(const std::string& json, Provision& out, std::string& error);

}  // namespace smaint::esp32
