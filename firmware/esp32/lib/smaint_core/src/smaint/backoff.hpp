// Reconnect backoff: exponential with "equal jitter", always within [base/2, max].
#pragma once

#include <cstdint>

namespace smaint {

// Small deterministic PRNG (splitmix64): seeded from the boot id, so nodes that lost the
// broker together do not come back in lockstep.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  // Uniform in [0, bound] (bound inclusive); bound 0 gives 0.
  std::uint64_t upto(std::uint64_t bound);

 private:
  std::uint64_t state_;
};

class Backoff {
 public:
  // base_ms >= 1, max_ms >= base_ms (raised if not).
  Backoff(std::uint32_t base_ms, std::uint32_t max_ms, std::uint64_t seed);

  // Delay before the next attempt: cap = min(max, base * 2^failures); delay in [cap/2, cap].
  std::uint32_t next_delay_ms();
  // A connection succeeded: start again from base.
  void reset() { failures_ = 0; }

  std::uint32_t failures() const { return failures_; }
  std::uint32_t base_ms() const { return base_; }
  std::uint32_t max_ms() const { return max_; }

 private:
  std::uint32_t base_;
  std::uint32_t max_;
  std::uint32_t failures_ = 0;
  SplitMix64 rng_;
};

}  // namespace smaint
