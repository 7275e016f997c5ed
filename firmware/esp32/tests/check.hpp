// A minimal test harness: TEST(name) { CHECK(...); } and a main that runs the cases named on
// the command line (all when none), so ctest can list each case on its own.
#pragma once

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

namespace check {

struct Case {
  const char* name;
  std::function<void()> fn;
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}
inline int& failures() {
  static int n = 0;
  return n;
}

struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

inline int run(int argc, char** argv) {
  int ran = 0;
  for (const auto& c : registry()) {
    bool selected = argc <= 1;
    for (int i = 1; i < argc; ++i) selected = selected || std::strcmp(argv[i], c.name) == 0;
    if (!selected) continue;
    const int before = failures();
    c.fn();
    ++ran;
    std::printf("%s %s\n", failures() == before ? "ok  " : "FAIL", c.name);
  }
  if (ran == 0) {
    std::printf("no test case matched\n");
    return 2;
  }
  return failures() == 0 ? 0 : 1;
}

}  // namespace check

#define CHECK_CAT2(a, b) a##b
#define CHECK_CAT(a, b) CHECK_CAT2(a, b)
#define TEST(name)                                                               \
  static void CHECK_CAT(test_, name)();                                          \
  static const check::Register CHECK_CAT(reg_, name)(#name, CHECK_CAT(test_, name)); \
  static void CHECK_CAT(test_, name)()

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      ++check::failures();                                                            \
      std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);         \
    }                                                                                 \
  } while (0)

#define CHECK_EQ(a, b)                                                                \
  do {                                                                                \
    const auto& check_a_ = (a);                                                       \
    const auto& check_b_ = (b);                                                       \
    if (!(check_a_ == check_b_)) {                                                    \
      ++check::failures();                                                            \
      std::printf("  %s:%d: CHECK_EQ(%s, %s) failed: [%s] != [%s]\n", __FILE__, __LINE__, #a, #b, \
                  check::show(check_a_).c_str(), check::show(check_b_).c_str());      \
    }                                                                                 \
  } while (0)

#define CHECK_MAIN \
  int main(int argc, char** argv) { return check::run(argc, argv); }

namespace check {
inline std::string show(const std::string& s) { return s; }
inline std::string show(const char* s) { return s; }
inline std::string show(bool b) { return b ? "true" : "false"; }
template <typename T>
std::string show(const T& v) {
  if constexpr (std::is_arithmetic_v<T>) {
    return std::to_string(v);
  } else {
    return "?";
  }
}
}  // namespace check
