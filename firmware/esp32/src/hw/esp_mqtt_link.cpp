#include "hw/esp_mqtt_link.hpp"

#include <esp_idf_version.h>
#include <esp_log.h>

namespace smaint::esp32 {

namespace {
constexpr const char* kTag = "smaint-mqtt";
}

bool EspMqttLink::begin(const Provision& p, const std::string& will_topic,
                        const std::string& will_payload) {
  uri_ = p.mqtt_uri;
  client_id_ = "dev-" + p.device;
  username_ = p.mqtt_username;
  password_ = p.mqtt_password;
  ca_pem_ = p.ca_pem;
  will_topic_ = will_topic;
  will_payload_ = will_payload;
  events_ = xQueueCreate(64, sizeof(Event));
  if (events_ == nullptr) return false;

  esp_mqtt_client_config_t cfg = {};
#if ESP_IDF_VERSION_MAJOR >= 5
  cfg.broker.address.uri = uri_.c_str();
  if (!ca_pem_.empty()) cfg.broker.verification.certificate = ca_pem_.c_str();
  cfg.credentials.client_id = client_id_.c_str();
  if (!username_.empty()) cfg.credentials.username = username_.c_str();
  if (!password_.empty()) cfg.credentials.authentication.password = password_.c_str();
  cfg.session.last_will.topic = will_topic_.c_str();
  cfg.session.last_will.msg = will_payload_.c_str();
  cfg.session.last_will.msg_len = static_cast<int>(will_payload_.size());
  cfg.session.last_will.qos = 1;
  cfg.session.last_will.retain = 1;
  cfg.session.keepalive = 15;
  cfg.network.disable_auto_reconnect = true;
#else
  cfg.uri = uri_.c_str();
  if (!ca_pem_.empty()) cfg.cert_pem = ca_pem_.c_str();
  cfg.client_id = client_id_.c_str();
  if (!username_.empty()) cfg.username = username_.c_str();
  if (!password_.empty()) cfg.password = password_.c_str();
  cfg.lwt_topic = will_topic_.c_str();
  cfg.lwt_msg = will_payload_.c_str();
  cfg.lwt_msg_len = static_cast<int>(will_payload_.size());
  cfg.lwt_qos = 1;
  cfg.lwt_retain = 1;
  cfg.keepalive = 15;
  cfg.disable_auto_reconnect = true;
#endif
  client_ = esp_mqtt_client_init(&cfg);
  if (client_ == nullptr) return false;
  esp_mqtt_client_register_event(client_, static_cast<esp_mqtt_event_id_t>(ESP_EVENT_ANY_ID),
                                 &EspMqttLink::on_event, this);
  return true;
}

void EspMqttLink::connect() {
  if (client_ == nullptr || connecting_) return;
  connecting_ = true;
  if (!started_) {
    started_ = esp_mqtt_client_start(client_) == ESP_OK;
    if (!started_) connecting_ = false;
  } else if (esp_mqtt_client_reconnect(client_) != ESP_OK) {
    connecting_ = false;
  }
}

void EspMqttLink::on_event(void* self, esp_event_base_t /*base*/, int32_t id, void* data) {
  auto* link = static_cast<EspMqttLink*>(self);
  auto* ev = static_cast<esp_mqtt_event_handle_t>(data);
  Event e{EventKind::Connected, 0, nullptr, nullptr};
  switch (static_cast<esp_mqtt_event_id_t>(id)) {
    case MQTT_EVENT_CONNECTED:
      link->connected_ = true;
      e.kind = EventKind::Connected;
      break;
    case MQTT_EVENT_DISCONNECTED:
      link->connected_ = false;
      e.kind = EventKind::Disconnected;
      break;
    case MQTT_EVENT_PUBLISHED:
      e.kind = EventKind::Published;
      e.mid = ev->msg_id;
      break;
    case MQTT_EVENT_DATA:
      // Config messages are small; a fragmented message (larger than the client's buffer)
      // is not a config we would accept anyway.
      if (ev->current_data_offset != 0 || ev->data_len != ev->total_data_len) return;
      e.kind = EventKind::Data;
      e.topic = new std::string(ev->topic, static_cast<std::size_t>(ev->topic_len));
      e.payload = new std::string(ev->data, static_cast<std::size_t>(ev->data_len));
      break;
    case MQTT_EVENT_ERROR:
      ESP_LOGW(kTag, "mqtt error");
      return;
    default:
      return;
  }
  if (xQueueSend(link->events_, &e, 0) != pdTRUE) {
    ESP_LOGW(kTag, "event queue full, event %d dropped", static_cast<int>(id));
    delete e.topic;
    delete e.payload;
  }
}

bool EspMqttLink::poll(Node& node, std::uint64_t uptime_ms) {
  bool lost = false;
  Event e;
  while (xQueueReceive(events_, &e, 0) == pdTRUE) {
    switch (e.kind) {
      case EventKind::Connected:
        connecting_ = false;
        node.on_connected(uptime_ms, *this);
        break;
      case EventKind::Disconnected:
        connecting_ = false;
        node.on_disconnected();
        lost = true;
        break;
      case EventKind::Published:
        node.on_published(e.mid);
        break;
      case EventKind::Data:
        node.on_message(*e.topic, *e.payload, uptime_ms, *this);
        if (!node.last_config_error().empty()) {
          ESP_LOGW(kTag, "config rejected: %s", node.last_config_error().c_str());
        }
        delete e.topic;
        delete e.payload;
        break;
    }
  }
  return lost;
}

bool EspMqttLink::publish(const std::string& topic, const std::string& payload, int qos,
                          bool retain, int& mid) {
  if (!connected()) return false;
  // enqueue: never blocks loop() on the network; esp-mqtt's task sends it.
  mid = esp_mqtt_client_enqueue(client_, topic.c_str(), payload.data(),
                                static_cast<int>(payload.size()), qos, retain ? 1 : 0, true);
  return mid >= 0;
}

bool EspMqttLink::subscribe(const std::string& topic, int qos) {
  if (!connected()) return false;
#if ESP_IDF_VERSION_MAJOR >= 5
  return esp_mqtt_client_subscribe_single(client_, topic.c_str(), qos) >= 0;
#else
  return esp_mqtt_client_subscribe(client_, topic.c_str(), qos) >= 0;
#endif
}

}  // namespace smaint::esp32
