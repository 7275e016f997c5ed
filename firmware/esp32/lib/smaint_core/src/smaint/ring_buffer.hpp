// A fixed-capacity FIFO that keeps the newest items: pushing into a full buffer drops the oldest.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace smaint {

template <typename T>
class RingBuffer {
 public:
  // Capacity 0 is raised to 1 so the buffer always holds the newest item.
  explicit RingBuffer(std::size_t capacity) : slots_(capacity == 0 ? 1 : capacity) {}

  std::size_t capacity() const { return slots_.size(); }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  bool full() const { return size_ == slots_.size(); }

  // Appends `item`; returns true when the oldest item was dropped to make room.
  bool push(T item) {
    const bool dropped = full();
    if (dropped) pop_front();
    slots_[(head_ + size_) % slots_.size()] = std::move(item);
    ++size_;
    return dropped;
  }

  // The i-th oldest item, 0 being the oldest. Precondition: i < size().
  T& operator[](std::size_t i) { return slots_[(head_ + i) % slots_.size()]; }
  const T& operator[](std::size_t i) const { return slots_[(head_ + i) % slots_.size()]; }
  T& front() { return (*this)[0]; }

  // Removes the oldest item. Precondition: !empty().
  void pop_front() {
    slots_[head_] = T{};
    head_ = (head_ + 1) % slots_.size();
    --size_;
  }

  void clear() {
    while (!empty()) pop_front();
  }

 private:
  std::vector<T> slots_;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace smaint
