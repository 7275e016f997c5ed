// Host sensor sources: a synthetic generator and a CSV replay.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "smaint/backoff.hpp"
#include "smaint/node.hpp"
#include "smaint/profiles.hpp"

namespace smaint::host {

// Plausible values inside each metric's physical range: a slow sine around the middle of the
// lower third of the range plus noise; deterministic for a given seed.
class SyntheticSensors final : public SensorSource {
 public:
  SyntheticSensors(const ProfileDef& profile, std::uint64_t seed);
  bool sample(std::size_t index, std::uint64_t uptime_ms, double& value) override;

 private:
  const ProfileDef& profile_;
  SplitMix64 rng_;
};

// Replays a CSV file whose header names the profile's metrics (other columns are ignored).
// Each metric walks its own column, row after row, wrapping at the end; an empty or
// non-numeric cell is a failed read.
class CsvSensors final : public SensorSource {
 public:
  // Loads `path`; returns nullopt with `error` set if it is unusable.
  static std::optional<CsvSensors> load(const std::string& path, const ProfileDef& profile,
                                        std::string& error);
  bool sample(std::size_t index, std::uint64_t uptime_ms, double& value) override;
  std::size_t rows() const { return rows_.size(); }

 private:
  CsvSensors() = default;
  std::vector<int> column_of_;  // per metric: CSV column, or -1
  std::vector<std::vector<std::optional<double>>> rows_;
  std::vector<std::size_t> cursor_;
};

}  // namespace smaint::host
