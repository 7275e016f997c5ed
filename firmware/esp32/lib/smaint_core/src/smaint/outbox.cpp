#include "smaint/outbox.hpp"

namespace smaint {

bool Outbox::push(const Reading& r) {
  bool dropped = false;
  if (ring_.full()) {
    // The oldest goes, even if in flight: its late ack will find nothing and be ignored.
    if (ring_.front().state == State::InFlight) --in_flight_;
    ring_.pop_front();
    if (cursor_ > 0) --cursor_;
    dropped = true;
  }
  Entry e;
  e.reading = r;
  ring_.push(e);
  return dropped;
}

Outbox::Entry* Outbox::next_unsent() {
  while (cursor_ < ring_.size() && ring_[cursor_].state != State::Unsent) ++cursor_;
  return cursor_ < ring_.size() ? &ring_[cursor_] : nullptr;
}

void Outbox::mark_sent(Entry& e, int mid) {
  e.state = State::InFlight;
  e.mid = mid;
  ++in_flight_;
}

bool Outbox::ack(int mid) {
  for (std::size_t i = 0; i < ring_.size() && i < cursor_ + 1; ++i) {
    Entry& e = ring_[i];
    if (e.state == State::InFlight && e.mid == mid) {
      e.state = State::Acked;
      --in_flight_;
      pop_acked_prefix();
      return true;
    }
  }
  return false;
}

void Outbox::discard(Entry& e) {
  e.state = State::Acked;
  pop_acked_prefix();
}

void Outbox::requeue_in_flight() {
  for (std::size_t i = 0; i < ring_.size(); ++i) {
    if (ring_[i].state == State::InFlight) ring_[i].state = State::Unsent;
  }
  in_flight_ = 0;
  cursor_ = 0;
}

void Outbox::pop_acked_prefix() {
  while (!ring_.empty() && ring_.front().state == State::Acked) {
    ring_.pop_front();
    if (cursor_ > 0) --cursor_;
  }
}

}  // namespace smaint
