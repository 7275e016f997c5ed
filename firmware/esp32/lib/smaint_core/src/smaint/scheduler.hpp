// Periodic tasks on a millisecond uptime clock: one per sensor plus the publish task.
// A task that fell behind (a slow sensor read, a blocking reconnect) runs once and skips
// the missed periods instead of bursting.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace smaint {

template <std::size_t N>
class Scheduler {
 public:
  // (Re)arms `task` with `period_ms` (> 0), first due at `now_ms`.
  void arm(std::size_t task, std::uint32_t period_ms, std::uint64_t now_ms) {
    tasks_[task] = Task{true, period_ms == 0 ? 1U : period_ms, now_ms};
  }
  void disarm(std::size_t task) { tasks_[task].armed = false; }
  bool armed(std::size_t task) const { return tasks_[task].armed; }
  std::uint32_t period(std::size_t task) const { return tasks_[task].period_ms; }

  // True when `task` is due at `now_ms`; then schedules its next run.
  bool take_due(std::size_t task, std::uint64_t now_ms) {
    Task& t = tasks_[task];
    if (!t.armed || now_ms < t.next_ms) return false;
    t.next_ms += t.period_ms;
    if (t.next_ms <= now_ms) t.next_ms = now_ms + t.period_ms;  // skip missed periods
    return true;
  }

  // Earliest due time of any armed task (UINT64_MAX when none).
  std::uint64_t next_due_ms() const {
    std::uint64_t next = UINT64_MAX;
    for (const auto& t : tasks_) {
      if (t.armed && t.next_ms < next) next = t.next_ms;
    }
    return next;
  }

 private:
  struct Task {
    bool armed = false;
    std::uint32_t period_ms = 1;
    std::uint64_t next_ms = 0;
  };
  std::array<Task, N> tasks_{};
};

}  // namespace smaint
