#include "hw/sensors_esp32.hpp"

#include <Arduino.h>
#include <Wire.h>

#include <cmath>

namespace smaint::esp32 {

// --- DS18B20 ----------------------------------------------------------------------------------

void Ds18b20::begin() {
  sensors_.begin();
  sensors_.setResolution(12);
  sensors_.setWaitForConversion(false);  // never block loop() for the 750 ms conversion
  present_ = sensors_.getDeviceCount() > 0;
}

bool Ds18b20::read(std::uint64_t uptime_ms, double& celsius) {
  if (!present_) {
    begin();  // hot-plugged or a loose wire that came back
    if (!present_) return false;
  }
  bool ok = false;
  if (pending_ && uptime_ms - requested_ms_ >= 750) {
    const float t = sensors_.getTempCByIndex(0);
    pending_ = false;
    if (t != DEVICE_DISCONNECTED_C && t > -55.0f && t < 125.0f) {
      celsius = static_cast<double>(t);
      ok = true;
    } else {
      present_ = false;
    }
  }
  if (!pending_ && present_) {
    sensors_.requestTemperatures();
    requested_ms_ = uptime_ms;
    pending_ = true;
  }
  return ok;
}

// --- ADXL345 ------------------------------------------------------------------------------------

namespace {
constexpr std::uint8_t kAdxlAddr = 0x53;  // SDO low
constexpr double kAdxlGPerLsb = 0.0039;   // full resolution: 3.9 mg/LSB at every range
constexpr int kAdxlWindow = 64;           // samples at 1600 Hz: ~40 ms
}  // namespace

bool Adxl345::write_reg(std::uint8_t reg, std::uint8_t value) {
  Wire.beginTransmission(kAdxlAddr);
  Wire.write(reg);
  Wire.write(value);
  return Wire.endTransmission() == 0;
}

bool Adxl345::read_xyz(int16_t& x, int16_t& y, int16_t& z) {
  Wire.beginTransmission(kAdxlAddr);
  Wire.write(0x32);  // DATAX0
  if (Wire.endTransmission(false) != 0) return false;
  if (Wire.requestFrom(kAdxlAddr, static_cast<std::uint8_t>(6)) != 6) return false;
  std::uint8_t b[6];
  for (auto& v : b) v = static_cast<std::uint8_t>(Wire.read());
  x = static_cast<int16_t>(b[1] << 8 | b[0]);
  y = static_cast<int16_t>(b[3] << 8 | b[2]);
  z = static_cast<int16_t>(b[5] << 8 | b[4]);
  return true;
}

bool Adxl345::begin(int sda, int scl) {
  Wire.begin(sda, scl, 400000);
  Wire.beginTransmission(kAdxlAddr);
  Wire.write(0x00);  // DEVID
  if (Wire.endTransmission(false) != 0 || Wire.requestFrom(kAdxlAddr, static_cast<std::uint8_t>(1)) != 1 ||
      Wire.read() != 0xE5) {
    present_ = false;
    return false;
  }
  present_ = write_reg(0x31, 0x0B)     // DATA_FORMAT: full resolution, ±16 g
             && write_reg(0x2C, 0x0E)  // BW_RATE: 1600 Hz output data rate
             && write_reg(0x2D, 0x08); // POWER_CTL: measure
  return present_;
}

bool Adxl345::vibration_rms(double& g) {
  if (!present_) return false;
  double sum[3] = {0, 0, 0};
  double sq[3] = {0, 0, 0};
  for (int i = 0; i < kAdxlWindow; ++i) {
    int16_t v[3];
    if (!read_xyz(v[0], v[1], v[2])) {
      present_ = false;
      return false;
    }
    for (int a = 0; a < 3; ++a) {
      const double x = v[a] * kAdxlGPerLsb;
      sum[a] += x;
      sq[a] += x * x;
    }
    delayMicroseconds(625);  // one sample period at 1600 Hz
  }
  double var = 0;
  for (int a = 0; a < 3; ++a) {
    const double mean = sum[a] / kAdxlWindow;
    var += sq[a] / kAdxlWindow - mean * mean;
  }
  g = std::sqrt(var > 0 ? var : 0);
  return true;
}

// --- SCT-013 (voltage-output type, biased to mid-supply) ---------------------------------------

void Sct013::begin() {
  analogReadResolution(12);
  analogSetPinAttenuation(pin_, ADC_11db);
}

bool Sct013::current_rms(double& amps) {
  const std::uint32_t start = millis();
  double sum = 0;
  double sq = 0;
  int n = 0;
  while (millis() - start < 100) {
    const double mv = analogReadMilliVolts(pin_);
    sum += mv;
    sq += mv * mv;
    ++n;
  }
  if (n < 100) return false;
  const double mean = sum / n;
  if (mean < 200 || mean > 3000) return false;  // bias divider missing: the clamp is unplugged
  const double rms_mv = std::sqrt(std::fmax(0.0, sq / n - mean * mean));
  amps = rms_mv / 1000.0 * amps_per_volt_;
  return true;
}

// --- the motor profile ------------------------------------------------------------------------

void MotorSensors::begin() {
  temp_.begin();
  accel_.begin(sda_, scl_);
  current_.begin();
}

bool MotorSensors::sample(std::size_t index, std::uint64_t uptime_ms, double& value) {
  switch (index) {
    case 0: return temp_.read(uptime_ms, value);
    case 1: return accel_.vibration_rms(value) || (accel_.begin(sda_, scl_) && accel_.vibration_rms(value));
    case 2: return current_.current_rms(value);
    default: return false;
  }
}

}  // namespace smaint::esp32
