// Drivers for a motor node: DS18B20 housing temperature (1-Wire), ADXL345 vibration RMS (I2C),
// SCT-013 phase current (ADC). Metric indexes follow the "motor" profile.
#pragma once

#include <DallasTemperature.h>
#include <OneWire.h>

#include <cstdint>

#include "hw/provisioning.hpp"
#include "smaint/node.hpp"

namespace smaint::esp32 {

class Ds18b20 {
 public:
  explicit Ds18b20(int pin) : wire_(static_cast<std::uint8_t>(pin)), sensors_(&wire_) {}
  void begin();
  // Latest completed conversion (°C); starts the next one. Non-blocking.
  bool read(std::uint64_t uptime_ms, double& celsius);

 private:
  OneWire wire_;
  DallasTemperature sensors_;
  std::uint64_t requested_ms_ = 0;
  bool pending_ = false;
  bool present_ = false;
};

class Adxl345 {
 public:
  bool begin(int sda, int scl);
  // RMS of the acceleration about its mean (gravity removed) over a ~64 ms window, in g.
  bool vibration_rms(double& g);

 private:
  bool write_reg(std::uint8_t reg, std::uint8_t value);
  bool read_xyz(int16_t& x, int16_t& y, int16_t& z);
  bool present_ = false;
};

class Sct013 {
 public:
  Sct013(int adc_pin, double amps_per_volt) : pin_(adc_pin), amps_per_volt_(amps_per_volt) {}
  void begin();
  // RMS current over 100 ms (five 50 Hz / six 60 Hz cycles), in A.
  bool current_rms(double& amps);

 private:
  int pin_;
  double amps_per_volt_;
};

class MotorSensors final : public SensorSource {
 public:
  explicit MotorSensors(const Provision& p)
      : temp_(p.pin_onewire), current_(p.pin_ct_adc, p.ct_amps_per_volt), sda_(p.pin_i2c_sda),
        scl_(p.pin_i2c_scl) {}
  void begin();
  bool sample(std::size_t index, std::uint64_t uptime_ms, double& value) override;

 private:
  Ds18b20 temp_;
  Adxl345 accel_;
  Sct013 current_;
  int sda_;
  int scl_;
};

}  // namespace smaint::esp32
