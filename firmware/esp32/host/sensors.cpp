#include "sensors.hpp"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace smaint::host {

SyntheticSensors::SyntheticSensors(const ProfileDef& profile, std::uint64_t seed)
    : profile_(profile), rng_(seed) {}

bool SyntheticSensors::sample(std::size_t index, std::uint64_t uptime_ms, double& value) {
  if (index >= profile_.metric_count) return false;
  const MetricDef& m = profile_.metrics[index];
  const double span = m.high - m.low;
  const double centre = m.low + span * 0.25;
  const double t = static_cast<double>(uptime_ms) / 1000.0;
  const double wave = std::sin(t / 30.0 + static_cast<double>(index)) * span * 0.02;
  const double noise = (static_cast<double>(rng_.next() >> 11) / 9007199254740992.0 - 0.5) * span * 0.01;
  // Three decimals, as a real sensor's resolution would give, and short payloads.
  value = std::round((centre + wave + noise) * 1000.0) / 1000.0;
  if (value < m.low) value = m.low;
  if (value > m.high) value = m.high;
  return true;
}

namespace {

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, ',')) {
    while (!cell.empty() && (cell.back() == '\r' || cell.back() == ' ')) cell.pop_back();
    std::size_t start = 0;
    while (start < cell.size() && cell[start] == ' ') ++start;
    cells.push_back(cell.substr(start));
  }
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}

std::optional<double> parse_cell(const std::string& cell) {
  if (cell.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(cell.c_str(), &end);
  if (end == cell.c_str() || *end != '\0' || !std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace

std::optional<CsvSensors> CsvSensors::load(const std::string& path, const ProfileDef& profile,
                                           std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = "cannot open CSV file " + path;
    return std::nullopt;
  }
  std::string line;
  if (!std::getline(in, line)) {
    error = path + ": empty CSV file";
    return std::nullopt;
  }
  const auto header = split_csv_line(line);
  CsvSensors s;
  s.column_of_.assign(profile.metric_count, -1);
  bool any = false;
  for (std::size_t c = 0; c < header.size(); ++c) {
    const int idx = profile.index_of(header[c]);
    if (idx >= 0) {
      s.column_of_[static_cast<std::size_t>(idx)] = static_cast<int>(c);
      any = true;
    }
  }
  if (!any) {
    error = path + ": header names none of the metrics of sensor type " + profile.name;
    return std::nullopt;
  }
  while (std::getline(in, line)) {
    if (line.empty() || line == "\r") continue;
    const auto cells = split_csv_line(line);
    std::vector<std::optional<double>> row(profile.metric_count);
    for (std::size_t i = 0; i < profile.metric_count; ++i) {
      const int c = s.column_of_[i];
      if (c >= 0 && static_cast<std::size_t>(c) < cells.size()) row[i] = parse_cell(cells[static_cast<std::size_t>(c)]);
    }
    s.rows_.push_back(std::move(row));
  }
  if (s.rows_.empty()) {
    error = path + ": no data rows";
    return std::nullopt;
  }
  s.cursor_.assign(profile.metric_count, 0);
  return s;
}

bool CsvSensors::sample(std::size_t index, std::uint64_t /*uptime_ms*/, double& value) {
  if (index >= cursor_.size()) return false;
  const auto& cell = rows_[cursor_[index]][index];
  cursor_[index] = (cursor_[index] + 1) % rows_.size();
  if (!cell) return false;
  value = *cell;
  return true;
}

}  // namespace smaint::host
