// virtual-esp32: the node core on the host, talking to a real broker through libmosquitto.
//
//   virtual-esp32 --host 127.0.0.1 --port 1883 --device motor-01 --type motor --rate-hz 10
//     --seconds 30 --ring-size 512 [--csv data.csv]
//   virtual-esp32 --provision motor-01.json ...   (the file `smaint provision device` writes:
//     broker URI, credentials, CA certificate; options after it override it)
//
// Prints one JSON line of counters per --stats-ms (event "stats") and a final one (event
// "done") on stdout; diagnostics go to stderr. Exit status 0 when the outbox was drained,
// 3 when readings were still buffered at the end, 2 on bad arguments.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "mosquitto_link.hpp"
#include "sensors.hpp"
#include "smaint/backoff.hpp"
#include "smaint/json_reader.hpp"
#include "smaint/json_writer.hpp"
#include "smaint/node.hpp"
#include "smaint/telemetry.hpp"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int /*sig*/) { g_stop = g_stop + 1; }  // a second signal skips the drain

struct Args {
  std::string host = "127.0.0.1";
  int port = 1883;
  std::string device = "virtual-01";
  std::string type = "motor";
  double rate_hz = 1.0;
  double seconds = 10.0;
  std::size_t ring_size = 512;
  std::size_t max_in_flight = 32;
  std::string csv;
  std::string boot;
  long long sync_after_ms = 0;  // <0: never synced
  double drain_seconds = 10.0;
  std::uint32_t backoff_base_ms = 200;
  std::uint32_t backoff_max_ms = 5000;
  long long stats_ms = 0;
  std::string username;
  std::string password;
  std::string cafile;
  std::uint64_t seed = 0;
};

void usage() {
  std::cerr <<
      "usage: virtual-esp32 [--host H] [--port P] [--device ID] [--type motor|mill|turbofan]\n"
      "                     [--rate-hz R] [--seconds S] [--ring-size N] [--csv FILE]\n"
      "                     [--max-in-flight N] [--boot HEX] [--sync-after-ms MS (-1: never)]\n"
      "                     [--drain-seconds S] [--backoff-base-ms MS] [--backoff-max-ms MS]\n"
      "                     [--stats-ms MS] [--username U] [--password P] [--cafile PEM] [--seed N]\n"
      "                     [--provision FILE]\n";
}

// Reads the provisioning JSON a real node reads (firmware/esp32/src/hw/provisioning.cpp):
// device, type, mqtt_uri (mqtts://host:port or mqtt://host:port), mqtt_username,
// mqtt_password, ca_pem. libmosquitto takes the CA from a file, so ca_pem is written beside.
bool load_provision(const std::string& path, Args& a, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = "cannot read " + path;
    return false;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  const smaint::JsonParseResult r = smaint::parse_json(buf.str());
  if (!r.ok || r.value.kind != smaint::JsonValue::Kind::Object) {
    error = path + ": not a JSON object (" + r.error + ")";
    return false;
  }
  auto text = [&](const char* key, std::string& out) {
    const smaint::JsonValue* v = r.value.find(key);
    if (v != nullptr && v->kind == smaint::JsonValue::Kind::String) out = v->text;
  };
  std::string uri, ca_pem;
  text("device", a.device);
  text("type", a.type);
  text("mqtt_uri", uri);
  text("mqtt_username", a.username);
  text("mqtt_password", a.password);
  text("ca_pem", ca_pem);
  const bool tls = uri.rfind("mqtts://", 0) == 0;
  if (!tls && uri.rfind("mqtt://", 0) != 0) {
    error = path + ": mqtt_uri must start with mqtts:// (or mqtt:// in a lab)";
    return false;
  }
  const std::string rest = uri.substr(tls ? 8 : 7);
  const std::size_t colon = rest.rfind(':');
  a.host = rest.substr(0, colon);
  a.port = colon == std::string::npos ? (tls ? 8883 : 1883) : std::atoi(rest.c_str() + colon + 1);
  if (a.host.empty() || a.port < 1 || a.port > 65535) {
    error = path + ": bad host or port in mqtt_uri " + uri;
    return false;
  }
  if (tls) {
    if (ca_pem.empty()) {
      error = path + ": ca_pem is required for mqtts://";
      return false;
    }
    a.cafile = path + ".ca.pem";
    std::ofstream out(a.cafile, std::ios::trunc);
    out << ca_pem;
    if (!out) {
      error = "cannot write " + a.cafile;
      return false;
    }
  }
  return true;
}

bool parse_number(const char* s, double& out) {
  char* end = nullptr;
  out = std::strtod(s, &end);
  return end != s && *end == '\0';
}

std::optional<Args> parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") return std::nullopt;
    if (i + 1 >= argc) {
      std::cerr << "virtual-esp32: " << flag << " needs a value\n";
      return std::nullopt;
    }
    const char* val = argv[++i];
    double num = 0;
    const bool is_num = parse_number(val, num);
    auto need_num = [&](double lo, double hi) {
      if (!is_num || num < lo || num > hi) {
        std::cerr << "virtual-esp32: " << flag << " must be a number in [" << lo << ", " << hi << "]\n";
        return false;
      }
      return true;
    };
    if (flag == "--host") a.host = val;
    else if (flag == "--port") { if (!need_num(1, 65535)) return std::nullopt; a.port = static_cast<int>(num); }
    else if (flag == "--device") a.device = val;
    else if (flag == "--type") a.type = val;
    else if (flag == "--rate-hz") { if (!need_num(1.0 / 86400.0, 100)) return std::nullopt; a.rate_hz = num; }
    else if (flag == "--seconds") { if (!need_num(0, 1e7)) return std::nullopt; a.seconds = num; }
    else if (flag == "--ring-size") { if (!need_num(1, 1e6)) return std::nullopt; a.ring_size = static_cast<std::size_t>(num); }
    else if (flag == "--max-in-flight") { if (!need_num(1, 1000)) return std::nullopt; a.max_in_flight = static_cast<std::size_t>(num); }
    else if (flag == "--csv") a.csv = val;
    else if (flag == "--boot") a.boot = val;
    else if (flag == "--sync-after-ms") { if (!need_num(-1, 1e9)) return std::nullopt; a.sync_after_ms = static_cast<long long>(num); }
    else if (flag == "--drain-seconds") { if (!need_num(0, 3600)) return std::nullopt; a.drain_seconds = num; }
    else if (flag == "--backoff-base-ms") { if (!need_num(1, 3.6e6)) return std::nullopt; a.backoff_base_ms = static_cast<std::uint32_t>(num); }
    else if (flag == "--backoff-max-ms") { if (!need_num(1, 3.6e6)) return std::nullopt; a.backoff_max_ms = static_cast<std::uint32_t>(num); }
    else if (flag == "--stats-ms") { if (!need_num(0, 3.6e6)) return std::nullopt; a.stats_ms = static_cast<long long>(num); }
    else if (flag == "--username") a.username = val;
    else if (flag == "--password") a.password = val;
    else if (flag == "--cafile") a.cafile = val;
    else if (flag == "--provision") {
      std::string error;
      if (!load_provision(val, a, error)) {
        std::cerr << "virtual-esp32: --provision: " << error << "\n";
        return std::nullopt;
      }
    }
    else if (flag == "--seed") { if (!need_num(0, 1e15)) return std::nullopt; a.seed = static_cast<std::uint64_t>(num); }
    else {
      std::cerr << "virtual-esp32: unknown option " << flag << "\n";
      return std::nullopt;
    }
  }
  return a;
}

std::string random_boot_id() {
  std::random_device rd;
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 16; ++i) s += hex[rd() & 0xF];
  return s;
}

std::uint64_t hash_seed(const std::string& s) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  return h;
}

std::string counters_json(const char* event, const smaint::Node& node, const char* link_state) {
  const auto& c = node.counters();
  std::string out;
  smaint::JsonWriter w(out);
  w.begin_object();
  w.key("event"); w.string(event);
  w.key("device"); w.string(node.identity().device);
  w.key("boot"); w.string(node.identity().boot);
  w.key("link"); w.string(link_state);
  w.key("sampled"); w.uint(c.sampled);
  w.key("next_seq"); w.uint(node.next_seq());
  w.key("published"); w.uint(c.published);
  w.key("acked"); w.uint(c.acked);
  w.key("resent"); w.uint(c.resent);
  w.key("dropped_overflow"); w.uint(c.dropped_overflow);
  w.key("buffered"); w.uint(node.buffered());
  w.key("buffered_max"); w.uint(c.buffered_max);
  w.key("in_flight"); w.uint(node.in_flight());
  w.key("sensor_errors"); w.uint(c.sensor_errors);
  w.key("encode_errors"); w.uint(c.encode_errors);
  w.key("unsynced"); w.uint(c.unsynced);
  w.key("connects"); w.uint(c.connects);
  w.key("disconnects"); w.uint(c.disconnects);
  w.key("config_applied"); w.uint(c.config_applied);
  w.key("config_rejected"); w.uint(c.config_rejected);
  w.key("interval_ms"); w.uint(node.config().interval_ms);
  w.end_object();
  return out;
}

std::uint64_t epoch_ms_now() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch()).count());
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Args> parsed = parse_args(argc, argv);
  if (!parsed) {
    usage();
    return 2;
  }
  const Args& a = *parsed;
  const smaint::ProfileDef* profile = smaint::find_profile(a.type);
  if (profile == nullptr) {
    std::cerr << "virtual-esp32: unknown --type " << a.type << " (motor, mill, turbofan)\n";
    return 2;
  }
  if (!smaint::valid_id(a.device)) {
    std::cerr << "virtual-esp32: --device must match [a-z0-9][a-z0-9_-]{0,63}\n";
    return 2;
  }
  const std::string boot = a.boot.empty() ? random_boot_id() : a.boot;
  if (!smaint::valid_boot_id(boot)) {
    std::cerr << "virtual-esp32: --boot must be 8-32 lowercase hex digits\n";
    return 2;
  }

  std::unique_ptr<smaint::SensorSource> sensors;
  const std::uint64_t seed = a.seed != 0 ? a.seed : hash_seed(a.device + boot);
  if (!a.csv.empty()) {
    std::string err;
    auto csv = smaint::host::CsvSensors::load(a.csv, *profile, err);
    if (!csv) {
      std::cerr << "virtual-esp32: " << err << "\n";
      return 2;
    }
    sensors = std::make_unique<smaint::host::CsvSensors>(std::move(*csv));
  } else {
    sensors = std::make_unique<smaint::host::SyntheticSensors>(*profile, seed);
  }

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);

  const auto t0 = std::chrono::steady_clock::now();
  auto uptime = [&]() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - t0).count());
  };

  smaint::TimeSync clock;
  smaint::Identity id{a.device, boot, profile};
  smaint::NodeOptions opts;
  opts.ring_size = a.ring_size;
  opts.max_in_flight = a.max_in_flight;
  smaint::Node node(id, opts, *sensors, clock);
  smaint::NodeConfig cfg = smaint::default_config(*profile);
  cfg.interval_ms = static_cast<std::uint32_t>(std::max(10.0, std::round(1000.0 / a.rate_hz)));
  node.apply_config(cfg, 0);

  smaint::host::MosquittoLibrary lib;
  smaint::host::LinkSettings ls;
  ls.host = a.host;
  ls.port = a.port;
  ls.client_id = "dev-" + a.device;
  ls.username = a.username;
  ls.password = a.password;
  ls.cafile = a.cafile;
  smaint::host::MosquittoLink* link_ptr = nullptr;
  smaint::host::MosquittoLink link(
      ls, {[&]() { node.on_connected(uptime(), *link_ptr); },
           [&](int mid) { node.on_published(mid); },
           [&](const std::string& topic, const std::string& payload) {
             node.on_message(topic, payload, uptime(), *link_ptr);
             if (!node.last_config_error().empty()) {
               std::cerr << "virtual-esp32[" << a.device << "]: config rejected: "
                         << node.last_config_error() << "\n";
             }
           }});
  link_ptr = &link;
  smaint::Backoff backoff(a.backoff_base_ms, a.backoff_max_ms, seed ^ 0x5eedULL);

  const auto sample_until = static_cast<std::uint64_t>(a.seconds * 1000.0);
  std::uint64_t drain_until = 0;
  std::uint64_t next_attempt = 0;
  std::uint64_t next_stats = a.stats_ms > 0 ? static_cast<std::uint64_t>(a.stats_ms) : UINT64_MAX;
  bool sampling = true;
  bool was_up = false;

  for (;;) {
    const std::uint64_t now = uptime();
    if (sampling && (now >= sample_until || g_stop)) {
      sampling = false;
      drain_until = now + static_cast<std::uint64_t>(a.drain_seconds * 1000.0);
    }
    if (!sampling && (node.buffered() == 0 || now >= drain_until || g_stop > 1)) break;

    if (!clock.synced() && a.sync_after_ms >= 0 && now >= static_cast<std::uint64_t>(a.sync_after_ms)) {
      clock.set(epoch_ms_now(), uptime());
    }

    if (!link.is_open() && now >= next_attempt) {
      std::string err;
      if (!link.open(node.status_topic(), node.status_payload(false, now), err)) {
        const std::uint32_t delay = backoff.next_delay_ms();
        next_attempt = now + delay;
        std::cerr << "virtual-esp32[" << a.device << "]: broker " << a.host << ":" << a.port
                  << " unreachable (" << err << "), retry in " << delay << " ms\n";
      }
    }

    if (sampling) node.tick(now, link);
    else node.flush(link);

    if (link.is_open()) {
      const std::uint64_t due = sampling ? node.next_due_ms() : now + 5;
      const int wait = static_cast<int>(due > now ? std::min<std::uint64_t>(due - now, 20) : 0);
      const bool ok = link.service(wait);
      if (link.connected() && !was_up) {
        backoff.reset();
        was_up = true;
      }
      if (!ok) {
        const bool session_was_up = link.connected();
        link.close(false);
        if (session_was_up) node.on_disconnected();
        was_up = false;
        const std::uint32_t delay = backoff.next_delay_ms();
        next_attempt = uptime() + delay;
        std::cerr << "virtual-esp32[" << a.device << "]: link lost, " << node.buffered()
                  << " buffered, retry in " << delay << " ms\n";
      }
    } else {
      const std::uint64_t due = std::min(sampling ? node.next_due_ms() : now + 20, next_attempt);
      const auto wait = due > now ? std::min<std::uint64_t>(due - now, 20) : 1;
      std::this_thread::sleep_for(std::chrono::milliseconds(wait));
    }

    if (uptime() >= next_stats) {
      std::cout << counters_json("stats", node, link.connected() ? "up" : "down") << std::endl;
      next_stats += static_cast<std::uint64_t>(a.stats_ms);
    }
  }

  if (link.connected()) {
    int mid = 0;
    link.publish(node.status_topic(), node.status_payload(false, uptime()), 1, true, mid);
    link.service(50);
  }
  const char* state = link.connected() ? "up" : "down";
  link.close(true);
  std::cout << counters_json("done", node, state) << std::endl;
  return node.buffered() == 0 ? 0 : 3;
}
