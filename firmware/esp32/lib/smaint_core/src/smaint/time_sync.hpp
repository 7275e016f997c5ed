// Wall-clock state. Until NTP (or the host clock) sets it, readings carry synced=false and
// ts_ms=0; the gateway re-times them from (boot, uptime_ms).
#pragma once

#include <cstdint>

namespace smaint {

class TimeSync {
 public:
  // The clock was set: at uptime `uptime_ms` the epoch time was `epoch_ms`.
  void set(std::uint64_t epoch_ms, std::uint64_t uptime_ms) {
    offset_ms_ = epoch_ms >= uptime_ms ? epoch_ms - uptime_ms : 0;
    synced_ = epoch_ms >= uptime_ms;
  }
  bool synced() const { return synced_; }
  // Epoch ms at `uptime_ms`, or 0 when not synced.
  std::uint64_t epoch_ms_at(std::uint64_t uptime_ms) const {
    return synced_ ? offset_ms_ + uptime_ms : 0;
  }

 private:
  std::uint64_t offset_ms_ = 0;
  bool synced_ = false;
};

}  // namespace smaint
