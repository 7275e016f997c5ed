// Reconnect backoff stays within its bounds, grows, jitters and resets.
#include <set>

#include "check.hpp"
#include "smaint/backoff.hpp"

TEST(bounds_every_attempt) {
  for (std::uint64_t seed = 1; seed < 50; ++seed) {
    smaint::Backoff b(200, 5000, seed);
    std::uint64_t cap = 200;
    for (int attempt = 0; attempt < 100; ++attempt) {
      const std::uint32_t d = b.next_delay_ms();
      CHECK(d >= (cap + 1) / 2);
      CHECK(d <= cap);
      CHECK(d >= 100 && d <= 5000);
      cap = cap * 2 > 5000 ? 5000 : cap * 2;
    }
  }
}

TEST(grows_then_caps) {
  smaint::Backoff b(100, 1600, 3);
  std::uint32_t last_cap_hits = 0;
  for (int i = 0; i < 20; ++i) {
    const auto d = b.next_delay_ms();
    if (i >= 4) {
      CHECK(d >= 800);
      CHECK(d <= 1600);
      ++last_cap_hits;
    }
  }
  CHECK_EQ(last_cap_hits, 16U);
}

TEST(reset_starts_from_base) {
  smaint::Backoff b(100, 10000, 9);
  for (int i = 0; i < 10; ++i) b.next_delay_ms();
  b.reset();
  const auto d = b.next_delay_ms();
  CHECK(d >= 50 && d <= 100);
}

TEST(jitter_spreads_nodes) {
  std::set<std::uint32_t> first_delays;
  for (std::uint64_t seed = 0; seed < 64; ++seed) {
    smaint::Backoff b(1000, 60000, seed * 7919);
    for (int i = 0; i < 5; ++i) b.next_delay_ms();
    first_delays.insert(b.next_delay_ms());
  }
  CHECK(first_delays.size() > 40);  // nodes that lost the broker together do not retry together
}

TEST(degenerate_parameters) {
  smaint::Backoff zero(0, 0, 1);
  for (int i = 0; i < 5; ++i) CHECK_EQ(zero.next_delay_ms(), 1U);
  smaint::Backoff inverted(500, 100, 1);  // max below base is raised to base
  for (int i = 0; i < 5; ++i) {
    const auto d = inverted.next_delay_ms();
    CHECK(d >= 250 && d <= 500);
  }
  smaint::Backoff huge(1, 0xFFFFFFFFU, 1);  // doubling never overflows
  for (int i = 0; i < 200; ++i) CHECK(huge.next_delay_ms() >= 1);
}

CHECK_MAIN
