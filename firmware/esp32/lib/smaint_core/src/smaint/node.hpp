// The node: samples sensors on schedule, queues readings in the outbox, publishes them with
// QoS 1 while the link is up, applies the retained config. The platform (ESP32 or host) owns
// the MQTT client and the clock and calls in; everything here is single-threaded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "smaint/config.hpp"
#include "smaint/outbox.hpp"
#include "smaint/scheduler.hpp"
#include "smaint/telemetry.hpp"
#include "smaint/time_sync.hpp"

namespace smaint {

// An MQTT client as the node sees it.
class Transport {
 public:
  virtual ~Transport() = default;
  // True while a session with the broker is up (CONNACK received, not yet lost).
  virtual bool connected() const = 0;
  // Queues a publish; on success sets `mid` to the id its acknowledgement will carry.
  virtual bool publish(const std::string& topic, const std::string& payload, int qos, bool retain,
                       int& mid) = 0;
  virtual bool subscribe(const std::string& topic, int qos) = 0;
};

// Where sample values come from (drivers on the ESP32, CSV or a generator on the host).
class SensorSource {
 public:
  virtual ~SensorSource() = default;
  // Reads metric `index` of the node's profile; false when the sensor failed.
  virtual bool sample(std::size_t index, std::uint64_t uptime_ms, double& value) = 0;
};

struct NodeOptions {
  std::size_t ring_size = 512;
  std::size_t max_in_flight = 32;
  std::string fw = "0.1.0";
};

struct NodeCounters {
  std::uint64_t sampled = 0;          // readings created (seq values used)
  std::uint64_t sensor_errors = 0;    // failed or non-finite sensor reads
  std::uint64_t published = 0;        // handed to the transport (incl. re-sends)
  std::uint64_t acked = 0;            // acknowledged by the broker
  std::uint64_t resent = 0;           // handed again after a lost link
  std::uint64_t dropped_overflow = 0; // oldest readings dropped because the outbox was full
  std::uint64_t encode_errors = 0;
  std::uint64_t connects = 0;
  std::uint64_t disconnects = 0;
  std::uint64_t config_applied = 0;
  std::uint64_t config_rejected = 0;
  std::uint64_t unsynced = 0;         // readings taken before the clock was set
  std::size_t buffered_max = 0;       // high-water mark of the outbox
};

class Node {
 public:
  Node(Identity id, NodeOptions options, SensorSource& sensors, TimeSync& clock);

  // Runs due sensor/publish tasks and pumps the outbox if the link is up.
  void tick(std::uint64_t uptime_ms, Transport& link);
  // Publishes queued readings without sampling (used to drain the outbox before shutdown).
  void flush(Transport& link) {
    if (link.connected()) pump(link);
  }
  // Session up: subscribe to our config, announce online, start flushing the outbox.
  void on_connected(std::uint64_t uptime_ms, Transport& link);
  // Session lost: readings in flight will be sent again on the next session.
  void on_disconnected();
  // PUBACK for `mid`.
  void on_published(int mid);
  // A message on a subscribed topic.
  void on_message(std::string_view topic, std::string_view payload, std::uint64_t uptime_ms,
                  Transport& link);

  // DeviceStatus payloads (the offline one is the last will).
  std::string status_payload(bool online, std::uint64_t uptime_ms) const;

  const Identity& identity() const { return id_; }
  const NodeConfig& config() const { return config_; }
  const NodeCounters& counters() const { return counters_; }
  const std::string& last_config_error() const { return last_config_error_; }
  std::size_t buffered() const { return outbox_.size(); }
  std::size_t in_flight() const { return outbox_.in_flight(); }
  std::uint32_t next_seq() const { return seq_; }
  std::uint64_t next_due_ms() const { return sched_.next_due_ms(); }
  std::string telemetry_topic() const { return telemetry_topic_; }
  std::string status_topic() const { return status_topic_; }
  std::string config_topic() const { return config_topic_; }

  // Applies a config (from parse_config): reschedules sensors and publishing from `uptime_ms`.
  void apply_config(const NodeConfig& cfg, std::uint64_t uptime_ms);

 private:
  static constexpr std::size_t kPublishTask = kMaxMetrics;
  void sample_due(std::uint64_t uptime_ms);
  void make_reading(std::uint64_t uptime_ms);
  void pump(Transport& link);
  void announce(std::uint64_t uptime_ms, Transport& link);

  Identity id_;
  NodeOptions options_;
  SensorSource& sensors_;
  TimeSync& clock_;
  NodeConfig config_;
  Scheduler<kMaxMetrics + 1> sched_;
  Outbox outbox_;
  NodeCounters counters_;
  std::array<double, kMaxMetrics> latest_{};
  std::uint16_t have_mask_ = 0;  // metrics with a valid latest value
  std::uint32_t seq_ = 0;
  bool armed_ = false;
  std::string telemetry_topic_;
  std::string status_topic_;
  std::string config_topic_;
  std::string last_config_error_;
};

}  // namespace smaint
