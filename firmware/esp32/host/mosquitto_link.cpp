#include "mosquitto_link.hpp"

#include <mosquitto.h>

#include <utility>

namespace smaint::host {

MosquittoLibrary::MosquittoLibrary() { mosquitto_lib_init(); }
MosquittoLibrary::~MosquittoLibrary() { mosquitto_lib_cleanup(); }

MosquittoLink::MosquittoLink(LinkSettings settings, Callbacks callbacks)
    : settings_(std::move(settings)), callbacks_(std::move(callbacks)) {}

MosquittoLink::~MosquittoLink() { close(false); }

bool MosquittoLink::open(const std::string& will_topic, const std::string& will_payload,
                         std::string& error) {
  close(false);
  mosq_ = mosquitto_new(settings_.client_id.c_str(), true, this);
  if (mosq_ == nullptr) {
    error = "mosquitto_new failed";
    return false;
  }
  mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
  mosquitto_connect_callback_set(mosq_, on_connect_cb);
  mosquitto_disconnect_callback_set(mosq_, on_disconnect_cb);
  mosquitto_publish_callback_set(mosq_, on_publish_cb);
  mosquitto_message_callback_set(mosq_, on_message_cb);
  int rc = mosquitto_will_set(mosq_, will_topic.c_str(), static_cast<int>(will_payload.size()),
                              will_payload.data(), 1, true);
  if (rc == MOSQ_ERR_SUCCESS && !settings_.username.empty()) {
    rc = mosquitto_username_pw_set(mosq_, settings_.username.c_str(),
                                   settings_.password.empty() ? nullptr : settings_.password.c_str());
  }
  if (rc == MOSQ_ERR_SUCCESS && !settings_.cafile.empty()) {
    rc = mosquitto_tls_set(mosq_, settings_.cafile.c_str(), nullptr, nullptr, nullptr, nullptr);
  }
  if (rc == MOSQ_ERR_SUCCESS) {
    rc = mosquitto_connect(mosq_, settings_.host.c_str(), settings_.port, settings_.keepalive_s);
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    error = rc == MOSQ_ERR_ERRNO ? "connection refused or unreachable" : mosquitto_strerror(rc);
    close(false);
    return false;
  }
  lost_ = false;
  return true;
}

bool MosquittoLink::service(int timeout_ms) {
  if (mosq_ == nullptr) return false;
  const int rc = mosquitto_loop(mosq_, timeout_ms, 1);
  return rc == MOSQ_ERR_SUCCESS && !lost_;
}

void MosquittoLink::close(bool graceful) {
  if (mosq_ == nullptr) return;
  if (graceful && session_up_) {
    mosquitto_disconnect(mosq_);
    mosquitto_loop(mosq_, 100, 1);
  }
  mosquitto_destroy(mosq_);
  mosq_ = nullptr;
  session_up_ = false;
}

bool MosquittoLink::publish(const std::string& topic, const std::string& payload, int qos,
                            bool retain, int& mid) {
  if (mosq_ == nullptr || !session_up_) return false;
  const int rc = mosquitto_publish(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()),
                                   payload.data(), qos, retain);
  return rc == MOSQ_ERR_SUCCESS;
}

bool MosquittoLink::subscribe(const std::string& topic, int qos) {
  if (mosq_ == nullptr || !session_up_) return false;
  return mosquitto_subscribe(mosq_, nullptr, topic.c_str(), qos) == MOSQ_ERR_SUCCESS;
}

void MosquittoLink::on_connect_cb(mosquitto* /*m*/, void* self, int rc) {
  auto* link = static_cast<MosquittoLink*>(self);
  if (rc != 0) {  // CONNACK refused (bad credentials, not authorised)
    link->lost_ = true;
    return;
  }
  link->session_up_ = true;
  if (link->callbacks_.on_session_up) link->callbacks_.on_session_up();
}

void MosquittoLink::on_disconnect_cb(mosquitto* /*m*/, void* self, int /*rc*/) {
  static_cast<MosquittoLink*>(self)->lost_ = true;
}

void MosquittoLink::on_publish_cb(mosquitto* /*m*/, void* self, int mid) {
  auto* link = static_cast<MosquittoLink*>(self);
  if (link->callbacks_.on_published) link->callbacks_.on_published(mid);
}

void MosquittoLink::on_message_cb(mosquitto* /*m*/, void* self, const mosquitto_message* msg) {
  auto* link = static_cast<MosquittoLink*>(self);
  if (!link->callbacks_.on_message || msg == nullptr) return;
  const std::string payload(static_cast<const char*>(msg->payload),
                            msg->payload != nullptr ? static_cast<std::size_t>(msg->payloadlen) : 0);
  link->callbacks_.on_message(msg->topic, payload);
}

}  // namespace smaint::host
