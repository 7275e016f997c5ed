#include "smaint/backoff.hpp"

namespace smaint {

std::uint64_t SplitMix64::next() {
  std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::uint64_t SplitMix64::upto(std::uint64_t bound) {
  if (bound == UINT64_MAX) return next();
  return next() % (bound + 1);  // modulo bias is irrelevant for jitter
}

Backoff::Backoff(std::uint32_t base_ms, std::uint32_t max_ms, std::uint64_t seed)
    : base_(base_ms == 0 ? 1 : base_ms), max_(max_ms < base_ ? base_ : max_ms), rng_(seed) {}

std::uint32_t Backoff::next_delay_ms() {
  // Doubling stops at the first cap >= max, so neither the shift nor the counter overflows.
  std::uint64_t cap = base_;
  for (std::uint32_t i = 0; i < failures_ && cap < max_; ++i) cap *= 2;
  if (cap > max_) cap = max_;
  if (cap < max_) ++failures_;
  const std::uint64_t half = cap / 2;
  return static_cast<std::uint32_t>(cap - half + rng_.upto(half));
}

}  // namespace smaint
