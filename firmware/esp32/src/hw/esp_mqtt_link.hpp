// ESP-IDF's esp-mqtt client (TLS, QoS 1, last will) as the node's Transport. esp-mqtt runs
// its own task; its events are queued here and handed to the node from loop(), so the core
// stays single-threaded. Automatic reconnect is off: loop() retries with the core's Backoff.
#pragma once

#include <freertos/FreeRTOS.h>
#include <freertos/queue.h>
#include <mqtt_client.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "hw/provisioning.hpp"
#include "smaint/node.hpp"

namespace smaint::esp32 {

class EspMqttLink final : public Transport {
 public:
  // Creates the client (not yet connected). The will is the node's offline status.
  bool begin(const Provision& p, const std::string& will_topic, const std::string& will_payload);
  // First connect, or reconnect after a loss.
  void connect();
  // Hands queued events to the node; returns true when the session was lost in this call.
  bool poll(Node& node, std::uint64_t uptime_ms);

  bool connecting() const { return connecting_; }
  bool connected() const override { return connected_.load(); }
  bool publish(const std::string& topic, const std::string& payload, int qos, bool retain,
               int& mid) override;
  bool subscribe(const std::string& topic, int qos) override;

 private:
  enum class EventKind : std::uint8_t { Connected, Disconnected, Published, Data };
  struct Event {
    EventKind kind;
    int mid;
    std::string* topic;    // Data only; freed by poll()
    std::string* payload;  // Data only; freed by poll()
  };
  static void on_event(void* self, esp_event_base_t base, int32_t id, void* data);

  esp_mqtt_client_handle_t client_ = nullptr;
  QueueHandle_t events_ = nullptr;
  std::atomic<bool> connected_{false};
  bool connecting_ = false;
  bool started_ = false;
  // esp-mqtt keeps pointers into its config: these outlive the client.
  std::string uri_, client_id_, username_, password_, ca_pem_, will_topic_, will_payload_;
};

}  // namespace smaint::esp32
