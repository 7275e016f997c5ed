// libmosquitto as the node's Transport, driven from the caller's thread (no background loop).
// A fresh client is made for every connection so that the node's outbox is the only place a
// reading waits in: libmosquitto never re-sends behind the node's back.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "smaint/node.hpp"

struct mosquitto;
struct mosquitto_message;

namespace smaint::host {

struct LinkSettings {
  std::string host = "127.0.0.1";
  int port = 1883;
  std::string client_id;
  std::string username;
  std::string password;
  std::string cafile;  // TLS when set
  int keepalive_s = 10;
};

class MosquittoLink final : public Transport {
 public:
  struct Callbacks {
    std::function<void()> on_session_up;
    std::function<void(int mid)> on_published;
    std::function<void(const std::string& topic, const std::string& payload)> on_message;
  };

  MosquittoLink(LinkSettings settings, Callbacks callbacks);
  ~MosquittoLink() override;
  MosquittoLink(const MosquittoLink&) = delete;
  MosquittoLink& operator=(const MosquittoLink&) = delete;

  // Starts a connection (TCP connect + CONNECT with `will` retained on `will_topic`).
  // Returns false with `error` set when the broker cannot be reached.
  bool open(const std::string& will_topic, const std::string& will_payload, std::string& error);
  // Runs network I/O for up to `timeout_ms`. Returns false when the connection is gone
  // (the caller then calls close()).
  bool service(int timeout_ms);
  // Sends DISCONNECT if a session is up (no last will), and frees the client.
  void close(bool graceful);

  bool is_open() const { return mosq_ != nullptr; }
  bool connected() const override { return session_up_; }
  bool publish(const std::string& topic, const std::string& payload, int qos, bool retain,
               int& mid) override;
  bool subscribe(const std::string& topic, int qos) override;

 private:
  static void on_connect_cb(mosquitto* m, void* self, int rc);
  static void on_disconnect_cb(mosquitto* m, void* self, int rc);
  static void on_publish_cb(mosquitto* m, void* self, int mid);
  static void on_message_cb(mosquitto* m, void* self, const mosquitto_message* msg);

  LinkSettings settings_;
  Callbacks callbacks_;
  mosquitto* mosq_ = nullptr;
  bool session_up_ = false;
  bool lost_ = false;
};

// Calls mosquitto_lib_init/cleanup for the lifetime of the object.
class MosquittoLibrary {
 public:
  MosquittoLibrary();
  ~MosquittoLibrary();
  MosquittoLibrary(const MosquittoLibrary&) = delete;
  MosquittoLibrary& operator=(const MosquittoLibrary&) = delete;
};

}  // namespace smaint::host
