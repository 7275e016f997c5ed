// Smart Maintenance ESP32 sensor node: Wi-Fi, NTP, MQTT over TLS, motor sensors, and the
// portable core (lib/smaint_core) that the host build unit-tests.
#include <Arduino.h>
#include <WiFi.h>
#include <esp_random.h>
#include <esp_sntp.h>
#include <esp_timer.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <memory>

#include "hw/esp_mqtt_link.hpp"
#include "hw/provisioning.hpp"
#include "hw/sensors_esp32.hpp"
#include "smaint/backoff.hpp"
#include "smaint/node.hpp"

#ifndef SMAINT_FW_VERSION
#define SMAINT_FW_VERSION "dev"
#endif

namespace {

std::atomic<bool> g_time_set{false};

std::uint64_t uptime_ms() { return static_cast<std::uint64_t>(esp_timer_get_time() / 1000); }

std::string random_boot_id() {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 4; ++i) {
    const std::uint32_t r = esp_random();  // hardware RNG (RF on after Wi-Fi start)
    for (int k = 0; k < 4; ++k) s += hex[(r >> (k * 4)) & 0xF];
  }
  return s;
}

void on_time_sync(struct timeval* /*tv*/) { g_time_set = true; }

smaint::esp32::Provision g_prov;
smaint::TimeSync g_clock;
std::unique_ptr<smaint::esp32::MotorSensors> g_sensors;
std::unique_ptr<smaint::Node> g_node;
smaint::esp32::EspMqttLink g_link;
std::unique_ptr<smaint::Backoff> g_backoff;
std::uint64_t g_next_attempt = 0;

[[noreturn]] void halt(const std::string& why) {
  // Nothing to run without provisioning: say why on the console and retry after a while.
  for (int i = 0; i < 30; ++i) {
    Serial.printf("smaint: cannot start: %s\n", why.c_str());
    delay(10000);
  }
  ESP.restart();
  for (;;) {}
}

}  // namespace

void setup() {
  Serial.begin(115200);
  std::string error;
  if (!smaint::esp32::load_provision(g_prov, error)) halt(error);
  if (g_prov.type != "motor") halt("type: this build has drivers for the motor profile only");

  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(true);
  WiFi.begin(g_prov.wifi_ssid.c_str(), g_prov.wifi_password.c_str());

  sntp_set_time_sync_notification_cb(on_time_sync);
  configTime(0, 0, g_prov.ntp_server.c_str());

  const std::string boot = random_boot_id();
  smaint::Identity id{g_prov.device, boot, smaint::find_profile(g_prov.type)};
  smaint::NodeOptions opts;
  opts.ring_size = g_prov.ring_size;
  opts.max_in_flight = 16;
  opts.fw = SMAINT_FW_VERSION;
  g_sensors = std::make_unique<smaint::esp32::MotorSensors>(g_prov);
  g_sensors->begin();
  g_node = std::make_unique<smaint::Node>(id, opts, *g_sensors, g_clock);
  g_backoff = std::make_unique<smaint::Backoff>(500, 60000, std::stoull(boot, nullptr, 16));

  if (!g_link.begin(g_prov, g_node->status_topic(), g_node->status_payload(false, 0))) {
    halt("mqtt: cannot create the client");
  }
  Serial.printf("smaint: %s boot %s fw %s, broker %s\n", g_prov.device.c_str(), boot.c_str(),
                SMAINT_FW_VERSION, g_prov.mqtt_uri.c_str());
}

void loop() {
  const std::uint64_t now = uptime_ms();

  if (g_time_set.exchange(false)) {
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    const auto epoch_ms = static_cast<std::uint64_t>(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
    if (tv.tv_sec > 1600000000) g_clock.set(epoch_ms, uptime_ms());
  }

  if (g_link.poll(*g_node, now)) {
    g_next_attempt = now + g_backoff->next_delay_ms();
  } else if (g_link.connected()) {
    g_backoff->reset();
  }
  if (!g_link.connected() && !g_link.connecting() && now >= g_next_attempt &&
      WiFi.status() == WL_CONNECTED) {
    g_link.connect();
    g_next_attempt = now + 30000;  // if no CONNACK/DISCONNECT event comes, try again later
  }

  g_node->tick(now, g_link);

  const std::uint64_t due = g_node->next_due_ms();
  const std::uint64_t after = uptime_ms();
  if (due > after) delay(static_cast<std::uint32_t>(std::min<std::uint64_t>(due - after, 10)));
}
