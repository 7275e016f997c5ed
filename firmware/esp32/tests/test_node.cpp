// The node against a fake transport and fake sensors: schedule, offline buffering, ordered
// flush, overflow, time sync marking, config applied at run time, status payloads.
#include <map>
#include <vector>

#include "check.hpp"
#include "smaint/json_reader.hpp"
#include "smaint/node.hpp"
#include "smaint/topics.hpp"

namespace {

struct Sent {
  std::string topic;
  std::string payload;
  int qos;
  bool retain;
  int mid;
};

class FakeLink : public smaint::Transport {
 public:
  bool up = false;
  bool auto_ack = true;
  int next_mid = 0;
  std::vector<Sent> sent;
  std::vector<std::string> subscriptions;
  std::vector<int> unacked;
  bool connected() const override { return up; }
  bool publish(const std::string& topic, const std::string& payload, int qos, bool retain,
               int& mid) override {
    if (!up) return false;
    mid = ++next_mid;
    sent.push_back({topic, payload, qos, retain, mid});
    if (topic.find("/telemetry") != std::string::npos) unacked.push_back(mid);
    return true;
  }
  bool subscribe(const std::string& topic, int /*qos*/) override {
    subscriptions.push_back(topic);
    return up;
  }
  std::vector<smaint::JsonValue> telemetry() const {
    std::vector<smaint::JsonValue> out;
    for (const auto& s : sent) {
      if (s.topic.find("/telemetry") == std::string::npos) continue;
      out.push_back(smaint::parse_json(s.payload).value);
    }
    return out;
  }
};

class FakeSensors : public smaint::SensorSource {
 public:
  std::map<std::size_t, int> reads;
  bool fail_current = false;
  bool sample(std::size_t index, std::uint64_t uptime_ms, double& value) override {
    ++reads[index];
    if (fail_current && index == 2) return false;
    value = static_cast<double>(index) + static_cast<double>(uptime_ms) / 1000.0;
    return true;
  }
};

struct Rig {
  FakeLink link;
  FakeSensors sensors;
  smaint::TimeSync clock;
  smaint::Node node;
  explicit Rig(std::size_t ring = 100)
      : node(smaint::Identity{"motor-01", "0011223344556677", smaint::find_profile("motor")},
             options(ring), sensors, clock) {}
  static smaint::NodeOptions options(std::size_t ring) {
    smaint::NodeOptions o;
    o.ring_size = ring;
    o.max_in_flight = 4;
    return o;
  }
  void ack_all() {
    for (int mid : link.unacked) node.on_published(mid);
    link.unacked.clear();
  }
  // Runs the node from `from` to `to` ms in 10 ms steps, acking what was sent.
  void run(std::uint64_t from, std::uint64_t to) {
    for (std::uint64_t t = from; t < to; t += 10) {
      node.tick(t, link);
      if (link.up && link.auto_ack) ack_all();
    }
  }
  void connect(std::uint64_t now) {
    link.up = true;
    node.on_connected(now, link);
  }
  void disconnect() {
    link.up = false;
    link.unacked.clear();  // acks of the old session never come
    node.on_disconnected();
  }
};

std::vector<std::uint64_t> seqs(const std::vector<smaint::JsonValue>& msgs) {
  std::vector<std::uint64_t> out;
  for (const auto& m : msgs) out.push_back(m.find("seq")->integer);
  return out;
}

}  // namespace

TEST(publishes_on_schedule_with_all_metrics) {
  Rig rig;
  rig.connect(0);
  rig.run(0, 5000);  // default interval 1000 ms: readings at 0, 1000, ..., 4000
  const auto msgs = rig.link.telemetry();
  CHECK_EQ(msgs.size(), static_cast<std::size_t>(5));
  CHECK(seqs(msgs) == (std::vector<std::uint64_t>{0, 1, 2, 3, 4}));
  CHECK_EQ(msgs[1].find("uptime_ms")->integer, static_cast<std::uint64_t>(1000));
  CHECK_EQ(msgs[1].find("metrics")->members.size(), static_cast<std::size_t>(3));
  CHECK_EQ(rig.node.buffered(), static_cast<std::size_t>(0));
  CHECK_EQ(rig.node.counters().acked, static_cast<std::uint64_t>(5));
  CHECK(rig.link.subscriptions == (std::vector<std::string>{"smaint/v1/dev/motor-01/config"}));
  CHECK_EQ(rig.link.sent[0].topic, "smaint/v1/dev/motor-01/status");
  CHECK(rig.link.sent[0].retain);
}

TEST(unsynced_until_clock_set) {
  Rig rig;
  rig.connect(0);
  rig.run(0, 2000);
  rig.clock.set(1700000000000ULL + 2000, 2000);
  rig.run(2000, 3000);
  const auto msgs = rig.link.telemetry();
  CHECK_EQ(msgs.size(), static_cast<std::size_t>(3));
  CHECK(!msgs[0].find("synced")->boolean);
  CHECK_EQ(msgs[0].find("ts_ms")->integer, static_cast<std::uint64_t>(0));
  CHECK(msgs[2].find("synced")->boolean);
  CHECK_EQ(msgs[2].find("ts_ms")->integer, static_cast<std::uint64_t>(1700000002000ULL));
  CHECK_EQ(rig.node.counters().unsynced, static_cast<std::uint64_t>(2));
}

TEST(buffers_offline_and_flushes_in_order) {
  Rig rig;
  rig.connect(0);
  rig.run(0, 3000);        // seq 0..2 delivered
  rig.link.auto_ack = false;
  rig.run(3000, 3010);     // seq 3 sent, never acked
  rig.disconnect();
  rig.run(3010, 10000);    // seq 4..9 sampled offline
  CHECK_EQ(rig.node.buffered(), static_cast<std::size_t>(7));
  rig.link.sent.clear();
  rig.link.auto_ack = true;
  rig.connect(10000);
  for (int i = 0; i < 5; ++i) {  // window of 4 in flight: a few rounds of acks
    rig.node.flush(rig.link);
    rig.ack_all();
  }
  const auto msgs = rig.link.telemetry();
  CHECK(seqs(msgs) == (std::vector<std::uint64_t>{3, 4, 5, 6, 7, 8, 9}));
  CHECK_EQ(rig.node.buffered(), static_cast<std::size_t>(0));
  CHECK_EQ(rig.node.counters().resent, static_cast<std::uint64_t>(1));
}

TEST(in_flight_window_is_bounded) {
  Rig rig;
  rig.run(0, 20000);  // 20 readings offline
  rig.link.auto_ack = false;
  rig.connect(20000);
  CHECK_EQ(rig.link.telemetry().size(), static_cast<std::size_t>(4));
  CHECK_EQ(rig.node.in_flight(), static_cast<std::size_t>(4));
}

TEST(overflow_keeps_newest) {
  Rig rig(5);
  rig.run(0, 12000);  // 12 readings, ring of 5, link down
  CHECK_EQ(rig.node.counters().dropped_overflow, static_cast<std::uint64_t>(7));
  rig.connect(12000);
  for (int i = 0; i < 3; ++i) {
    rig.node.flush(rig.link);
    rig.ack_all();
  }
  CHECK(seqs(rig.link.telemetry()) == (std::vector<std::uint64_t>{7, 8, 9, 10, 11}));
}

TEST(config_applied_at_run_time) {
  Rig rig;
  rig.connect(0);
  rig.run(0, 1000);  // seq 0 at default 1000 ms
  rig.node.on_message("smaint/v1/dev/motor-01/config",
                      R"({"v":1,"interval_ms":100,"enabled":["current_a"]})", 1000, rig.link);
  CHECK_EQ(rig.node.counters().config_applied, static_cast<std::uint64_t>(1));
  CHECK_EQ(rig.node.config().interval_ms, 100U);
  // The status is re-announced with the new interval.
  CHECK(rig.link.sent.back().payload.find("\"interval_ms\":100") != std::string::npos);
  rig.run(1000, 2000);
  const auto msgs = rig.link.telemetry();
  CHECK_EQ(msgs.size(), static_cast<std::size_t>(11));
  const auto& last = msgs.back();
  CHECK_EQ(last.find("metrics")->members.size(), static_cast<std::size_t>(1));
  CHECK(last.find("metrics")->find("current_a") != nullptr);
}

TEST(per_sensor_schedule) {
  Rig rig;
  rig.connect(0);
  rig.node.on_message("smaint/v1/dev/motor-01/config",
                      R"({"v":1,"interval_ms":100,"sensor_ms":{"temperature_c":1000}})", 0, rig.link);
  rig.sensors.reads.clear();
  rig.run(0, 2000);
  CHECK_EQ(rig.sensors.reads[0], 2);   // temperature every 1000 ms
  CHECK_EQ(rig.sensors.reads[1], 20);  // vibration every 100 ms
  CHECK_EQ(rig.link.telemetry().size(), static_cast<std::size_t>(20));
}

TEST(bad_config_rejected_and_ignored) {
  Rig rig;
  rig.connect(0);
  const char* bad[] = {"", "{", "[]", R"({"v":1,"interval_ms":0})", R"({"v":1,"enabled":["x"]})",
                       "\xff\xfe", R"({"v":1,"interval_ms":1e3})"};
  for (const char* p : bad) {
    rig.node.on_message("smaint/v1/dev/motor-01/config", p, 0, rig.link);
  }
  // "" is valid (back to defaults); the six others are rejected with a reason.
  CHECK_EQ(rig.node.counters().config_rejected, static_cast<std::uint64_t>(6));
  CHECK(!rig.node.last_config_error().empty());
  CHECK_EQ(rig.node.config().interval_ms, 1000U);
  // Messages on other topics are not config.
  rig.node.on_message("smaint/v1/dev/other/config", R"({"v":1,"interval_ms":50})", 0, rig.link);
  CHECK_EQ(rig.node.config().interval_ms, 1000U);
}

TEST(failed_sensor_left_out) {
  Rig rig;
  rig.sensors.fail_current = true;
  rig.connect(0);
  rig.run(0, 1000);
  const auto msgs = rig.link.telemetry();
  CHECK_EQ(msgs.size(), static_cast<std::size_t>(1));
  CHECK(msgs[0].find("metrics")->find("current_a") == nullptr);
  CHECK_EQ(msgs[0].find("metrics")->members.size(), static_cast<std::size_t>(2));
  CHECK(rig.node.counters().sensor_errors >= 1);
}

TEST(status_payloads) {
  Rig rig;
  CHECK_EQ(rig.node.status_payload(false, 10),
           R"({"v":1,"device":"motor-01","boot":"0011223344556677","state":"offline","ts_ms":0,"type":"motor","fw":"0.1.0","interval_ms":1000})");
  rig.clock.set(1700000000000ULL, 0);
  CHECK(rig.node.status_payload(true, 5).find(R"("state":"online","ts_ms":1700000000005)") != std::string::npos);
}

CHECK_MAIN
