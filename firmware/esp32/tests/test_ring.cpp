// The ring buffer keeps the newest items in order; the outbox on top of it releases a reading
// only when acknowledged and re-sends in order after a lost link.
#include <vector>

#include "check.hpp"
#include "smaint/outbox.hpp"
#include "smaint/ring_buffer.hpp"

namespace {

smaint::Reading reading(std::uint32_t seq) {
  smaint::Reading r;
  r.seq = seq;
  r.mask = 1;
  return r;
}

std::vector<std::uint32_t> drain_seqs(smaint::Outbox& box, int& mid) {
  std::vector<std::uint32_t> seqs;
  while (auto* e = box.next_unsent()) {
    seqs.push_back(e->reading.seq);
    box.mark_sent(*e, ++mid);
  }
  return seqs;
}

}  // namespace

TEST(ring_fifo_order) {
  smaint::RingBuffer<int> rb(4);
  for (int i = 0; i < 3; ++i) CHECK(!rb.push(i));
  CHECK_EQ(rb.size(), static_cast<std::size_t>(3));
  CHECK_EQ(rb[0], 0);
  CHECK_EQ(rb[2], 2);
  rb.pop_front();
  CHECK_EQ(rb.front(), 1);
}

TEST(ring_overflow_keeps_newest) {
  smaint::RingBuffer<int> rb(5);
  int dropped = 0;
  for (int i = 0; i < 23; ++i) dropped += rb.push(i) ? 1 : 0;
  CHECK_EQ(dropped, 18);
  CHECK(rb.full());
  for (std::size_t i = 0; i < rb.size(); ++i) CHECK_EQ(rb[i], static_cast<int>(18 + i));
}

TEST(ring_wraps_many_times) {
  smaint::RingBuffer<int> rb(3);
  int next_expected = 0;
  for (int i = 0; i < 1000; ++i) {
    rb.push(i);
    if (i % 2 == 1) {  // consume one every other push: the ring stays partly full
      next_expected = rb.front();
      rb.pop_front();
      CHECK(rb.empty() || rb.front() == next_expected + 1);
    }
  }
  CHECK(rb.size() <= 3);
}

TEST(ring_capacity_zero_holds_one) {
  smaint::RingBuffer<int> rb(0);
  CHECK_EQ(rb.capacity(), static_cast<std::size_t>(1));
  rb.push(1);
  CHECK(rb.push(2));
  CHECK_EQ(rb.front(), 2);
}

TEST(outbox_releases_only_on_ack) {
  smaint::Outbox box(10);
  for (std::uint32_t s = 0; s < 4; ++s) box.push(reading(s));
  int mid = 0;
  CHECK(drain_seqs(box, mid) == (std::vector<std::uint32_t>{0, 1, 2, 3}));
  CHECK_EQ(box.in_flight(), static_cast<std::size_t>(4));
  CHECK(box.ack(2));   // out of order: seq 1 acked, seq 0 still waits
  CHECK_EQ(box.size(), static_cast<std::size_t>(4));
  CHECK(box.ack(1));   // seq 0 and 1 leave together
  CHECK_EQ(box.size(), static_cast<std::size_t>(2));
  CHECK(!box.ack(1));  // duplicate ack
  CHECK(!box.ack(99)); // unknown
  CHECK(box.ack(3));
  CHECK(box.ack(4));
  CHECK_EQ(box.size(), static_cast<std::size_t>(0));
  CHECK_EQ(box.in_flight(), static_cast<std::size_t>(0));
}

TEST(outbox_requeue_resends_in_order) {
  smaint::Outbox box(10);
  for (std::uint32_t s = 0; s < 6; ++s) box.push(reading(s));
  int mid = 0;
  drain_seqs(box, mid);          // 0..5 in flight as mids 1..6
  CHECK(box.ack(3));             // seq 2 delivered, out of order
  box.requeue_in_flight();       // link lost
  box.push(reading(6));          // sampled while down
  CHECK(!box.ack(1));            // a stale ack after requeue is ignored
  // Re-sent in order; the delivered seq 2 is not sent again.
  CHECK(drain_seqs(box, mid) == (std::vector<std::uint32_t>{0, 1, 3, 4, 5, 6}));
}

TEST(outbox_overflow_while_offline_keeps_newest) {
  smaint::Outbox box(5);
  int dropped = 0;
  for (std::uint32_t s = 0; s < 12; ++s) dropped += box.push(reading(s)) ? 1 : 0;
  CHECK_EQ(dropped, 7);
  int mid = 0;
  CHECK(drain_seqs(box, mid) == (std::vector<std::uint32_t>{7, 8, 9, 10, 11}));
}

TEST(outbox_overflow_drops_in_flight_oldest) {
  smaint::Outbox box(3);
  for (std::uint32_t s = 0; s < 3; ++s) box.push(reading(s));
  int mid = 0;
  drain_seqs(box, mid);          // all three in flight
  CHECK(box.push(reading(3)));   // full: seq 0 (in flight) goes
  CHECK_EQ(box.in_flight(), static_cast<std::size_t>(2));
  CHECK(!box.ack(1));            // its late ack finds nothing
  CHECK(drain_seqs(box, mid) == (std::vector<std::uint32_t>{3}));
  CHECK(box.ack(2));
  CHECK(box.ack(3));
  CHECK(box.ack(4));
  CHECK_EQ(box.size(), static_cast<std::size_t>(0));
}

TEST(outbox_discard) {
  smaint::Outbox box(4);
  box.push(reading(0));
  box.push(reading(1));
  auto* e = box.next_unsent();
  box.discard(*e);
  int mid = 0;
  CHECK(drain_seqs(box, mid) == (std::vector<std::uint32_t>{1}));
}

CHECK_MAIN
