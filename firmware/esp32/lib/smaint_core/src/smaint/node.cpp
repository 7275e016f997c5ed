#include "smaint/node.hpp"

#include <cmath>
#include <utility>

#include "smaint/topics.hpp"

namespace smaint {

Node::Node(Identity id, NodeOptions options, SensorSource& sensors, TimeSync& clock)
    : id_(std::move(id)),
      options_(std::move(options)),
      sensors_(sensors),
      clock_(clock),
      outbox_(options_.ring_size),
      telemetry_topic_(topics::telemetry(id_.device)),
      status_topic_(topics::status(id_.device)),
      config_topic_(topics::config(id_.device)) {
  if (options_.max_in_flight == 0) options_.max_in_flight = 1;
  if (id_.profile != nullptr) config_ = default_config(*id_.profile);
}

void Node::apply_config(const NodeConfig& cfg, std::uint64_t uptime_ms) {
  config_ = cfg;
  const std::size_t n = id_.profile != nullptr ? id_.profile->metric_count : 0;
  for (std::size_t i = 0; i < kMaxMetrics; ++i) {
    if (i < n && (cfg.enabled_mask & (1U << i))) {
      sched_.arm(i, cfg.sensor_period_ms(i), uptime_ms);
    } else {
      sched_.disarm(i);
    }
  }
  // A disabled metric must not linger in later readings.
  have_mask_ = static_cast<std::uint16_t>(have_mask_ & cfg.enabled_mask);
  sched_.arm(kPublishTask, cfg.interval_ms, uptime_ms);
  armed_ = true;
}

void Node::tick(std::uint64_t uptime_ms, Transport& link) {
  if (!armed_) apply_config(config_, uptime_ms);
  sample_due(uptime_ms);
  if (sched_.take_due(kPublishTask, uptime_ms)) make_reading(uptime_ms);
  if (link.connected()) pump(link);
}

void Node::sample_due(std::uint64_t uptime_ms) {
  if (id_.profile == nullptr) return;
  for (std::size_t i = 0; i < id_.profile->metric_count; ++i) {
    if (!sched_.take_due(i, uptime_ms)) continue;
    double v = 0.0;
    const auto bit = static_cast<std::uint16_t>(1U << i);
    if (sensors_.sample(i, uptime_ms, v) && std::isfinite(v)) {
      latest_[i] = v;
      have_mask_ = static_cast<std::uint16_t>(have_mask_ | bit);
    } else {
      // A failed read is left out of the next reading rather than repeating a stale value.
      ++counters_.sensor_errors;
      have_mask_ = static_cast<std::uint16_t>(have_mask_ & ~bit);
    }
  }
}

void Node::make_reading(std::uint64_t uptime_ms) {
  const auto mask = static_cast<std::uint16_t>(have_mask_ & config_.enabled_mask);
  if (mask == 0) return;  // nothing valid to send (a payload needs at least one metric)
  Reading r;
  r.seq = seq_++;
  r.uptime_ms = uptime_ms;
  r.synced = clock_.synced();
  r.ts_ms = clock_.epoch_ms_at(uptime_ms);
  r.mask = mask;
  r.values = latest_;
  ++counters_.sampled;
  if (!r.synced) ++counters_.unsynced;
  if (outbox_.push(r)) ++counters_.dropped_overflow;
  if (outbox_.size() > counters_.buffered_max) counters_.buffered_max = outbox_.size();
}

void Node::pump(Transport& link) {
  while (outbox_.in_flight() < options_.max_in_flight) {
    Outbox::Entry* e = outbox_.next_unsent();
    if (e == nullptr) return;
    const EncodeResult enc = encode_reading(id_, e->reading);
    if (!enc.ok) {
      // Cannot happen for readings built by make_reading; never block the queue on one.
      ++counters_.encode_errors;
      outbox_.discard(*e);
      continue;
    }
    int mid = 0;
    if (!link.publish(telemetry_topic_, enc.payload, 1, false, mid)) return;
    if (e->mid != 0) ++counters_.resent;
    outbox_.mark_sent(*e, mid);
    ++counters_.published;
  }
}

void Node::on_connected(std::uint64_t uptime_ms, Transport& link) {
  ++counters_.connects;
  link.subscribe(config_topic_, 1);
  announce(uptime_ms, link);
  pump(link);
}

void Node::on_disconnected() {
  ++counters_.disconnects;
  outbox_.requeue_in_flight();
}

void Node::on_published(int mid) {
  if (outbox_.ack(mid)) ++counters_.acked;
}

void Node::announce(std::uint64_t uptime_ms, Transport& link) {
  int mid = 0;
  link.publish(status_topic_, status_payload(true, uptime_ms), 1, true, mid);
}

std::string Node::status_payload(bool online, std::uint64_t uptime_ms) const {
  const EncodeResult r =
      encode_status(id_, online, clock_.epoch_ms_at(uptime_ms), options_.fw, config_.interval_ms);
  return r.ok ? r.payload : std::string();
}

void Node::on_message(std::string_view topic, std::string_view payload, std::uint64_t uptime_ms,
                      Transport& link) {
  if (topic != config_topic_ || id_.profile == nullptr) return;
  const ConfigResult res = parse_config(payload, *id_.profile);
  if (!res.ok) {
    ++counters_.config_rejected;
    last_config_error_ = res.error;
    return;
  }
  last_config_error_.clear();
  ++counters_.config_applied;
  if (res.config != config_) {
    apply_config(res.config, uptime_ms);
    if (link.connected()) announce(uptime_ms, link);
  }
}

}  // namespace smaint
