#include "hw/provisioning.hpp"

#include <LittleFS.h>
#include <Preferences.h>

#include "smaint/json_reader.hpp"
#include "smaint/profiles.hpp"
#include "smaint/telemetry.hpp"

namespace smaint::esp32 {

namespace {

std::string read_file(const char* path) {
  File f = LittleFS.open(path, "r");
  if (!f) return {};
  std::string s;
  s.reserve(f.size());
  while (f.available()) s += static_cast<char>(f.read());
  f.close();
  return s;
}

bool get_string(const JsonValue& root, const char* key, std::string& out, bool required,
                std::string& error) {
  const JsonValue* v = root.find(key);
  if (v == nullptr) {
    if (required) error = std::string(key) + ": missing";
    return !required;
  }
  if (v->kind != JsonValue::Kind::String) {
    error = std::string(key) + ": must be a string";
    return false;
  }
  out = v->text;
  return true;
}

void get_int(const JsonValue* obj, const char* key, int& out) {
  if (obj == nullptr) return;
  const JsonValue* v = obj->find(key);
  if (v != nullptr && v->is_uint() && v->integer < 64) out = static_cast<int>(v->integer);
}

}  // namespace

bool parse_provision(const std::string& json, Provision& out, std::string& error) {
  const JsonParseResult r = parse_json(json);
  if (!r.ok) {
    error = "provisioning is not valid JSON: " + r.error;
    return false;
  }
  const JsonValue& root = r.value;
  if (root.kind != JsonValue::Kind::Object) {
    error = "provisioning must be a JSON object";
    return false;
  }
  std::string ca_file;
  if (!get_string(root, "device", out.device, true, error) ||
      !get_string(root, "type", out.type, false, error) ||
      !get_string(root, "wifi_ssid", out.wifi_ssid, true, error) ||
      !get_string(root, "wifi_password", out.wifi_password, false, error) ||
      !get_string(root, "mqtt_uri", out.mqtt_uri, true, error) ||
      !get_string(root, "mqtt_username", out.mqtt_username, false, error) ||
      !get_string(root, "mqtt_password", out.mqtt_password, false, error) ||
      !get_string(root, "ca_file", ca_file, false, error) ||
      !get_string(root, "ntp_server", out.ntp_server, false, error)) {
    return false;
  }
  if (!valid_id(out.device)) {
    error = "device: must match [a-z0-9][a-z0-9_-]{0,63}";
    return false;
  }
  if (find_profile(out.type) == nullptr) {
    error = "type: unknown sensor type " + out.type;
    return false;
  }
  if (!get_string(root, "ca_pem", out.ca_pem, false, error)) return false;  // inline (NVS)
  if (out.mqtt_uri.rfind("mqtts://", 0) == 0 && out.ca_pem.empty()) {
    if (ca_file.empty()) {
      error = "ca_file or ca_pem: required for mqtts://";
      return false;
    }
    out.ca_pem = read_file(ca_file.c_str());
    if (out.ca_pem.empty()) {
      error = "ca_file: cannot read " + ca_file;
      return false;
    }
  } else if (out.mqtt_uri.rfind("mqtts://", 0) != 0 && out.mqtt_uri.rfind("mqtt://", 0) != 0) {
    error = "mqtt_uri: must start with mqtts:// (or mqtt:// in a lab)";
    return false;
  }
  if (const JsonValue* v = root.find("ring_size"); v != nullptr && v->is_uint() &&
                                                   v->integer >= 1 && v->integer <= 5000) {
    out.ring_size = static_cast<std::uint32_t>(v->integer);
  }
  if (const JsonValue* v = root.find("ct_amps_per_volt");
      v != nullptr && v->kind == JsonValue::Kind::Number && v->number > 0) {
    out.ct_amps_per_volt = v->number;
  }
  const JsonValue* pins = root.find("pins");
  get_int(pins, "onewire", out.pin_onewire);
  get_int(pins, "i2c_sda", out.pin_i2c_sda);
  get_int(pins, "i2c_scl", out.pin_i2c_scl);
  get_int(pins, "ct_adc", out.pin_ct_adc);
  return true;
}

bool load_provision(Provision& out, std::string& error) {
  if (!LittleFS.begin(false)) {
    error = "LittleFS: cannot mount (run: pio run -t uploadfs)";
  } else {
    const std::string json = read_file("/provision.json");
    if (!json.empty()) return parse_provision(json, out, error);
    error = "LittleFS: /provision.json not found";
  }
  Preferences prefs;
  if (prefs.begin("smaint", true)) {
    const String json = prefs.getString("provision", "");
    prefs.end();
    if (json.length() > 0) return parse_provision(std::string(json.c_str()), out, error);
  }
  error += "; NVS smaint/provision is empty too";
  return false;
}

}  // namespace smaint::esp32
