// The node's outbox: every reading goes here first and leaves only when the broker acknowledged
// it (QoS 1 PUBACK), so readings survive a lost link up to the ring's capacity, newest kept.
#pragma once

#include <cstddef>
#include <cstdint>

#include "smaint/ring_buffer.hpp"
#include "smaint/telemetry.hpp"

namespace smaint {

class Outbox {
 public:
  enum class State : std::uint8_t { Unsent, InFlight, Acked };
  struct Entry {
    Reading reading;
    State state = State::Unsent;
    int mid = 0;  // transport message id while in flight
  };

  explicit Outbox(std::size_t capacity) : ring_(capacity) {}

  // Adds a reading; returns true when the oldest reading was dropped to make room.
  bool push(const Reading& r);
  // The oldest reading not yet handed to the transport, or nullptr.
  Entry* next_unsent();
  // Marks `e` (from next_unsent) as handed to the transport under message id `mid`.
  void mark_sent(Entry& e, int mid);
  // Broker acknowledged `mid`; returns false when no reading waits for it (dropped, stale).
  bool ack(int mid);
  // Gives up on `e` (from next_unsent) without sending it.
  void discard(Entry& e);
  // Link lost: readings in flight will be sent again, in order.
  void requeue_in_flight();

  std::size_t size() const { return ring_.size(); }
  std::size_t capacity() const { return ring_.capacity(); }
  std::size_t in_flight() const { return in_flight_; }

 private:
  void pop_acked_prefix();
  RingBuffer<Entry> ring_;
  std::size_t cursor_ = 0;     // entries before it were handed to the transport (or acked)
  std::size_t in_flight_ = 0;
};

}  // namespace smaint
