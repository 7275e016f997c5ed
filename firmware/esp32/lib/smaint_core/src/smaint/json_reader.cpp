#include "smaint/json_reader.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace smaint {

const JsonValue* JsonValue::find(std::string_view name) const {
  for (const auto& m : members) {
    if (m.first == name) return &m.second;
  }
  return nullptr;
}

const char* JsonValue::kind_name(Kind k) {
  switch (k) {
    case Kind::Null: return "null";
    case Kind::Bool: return "boolean";
    case Kind::Number: return "number";
    case Kind::String: return "string";
    case Kind::Array: return "array";
    case Kind::Object: return "object";
  }
  return "?";
}

namespace {

class Parser {
 public:
  Parser(std::string_view s, JsonLimits limits) : s_(s), limits_(limits) {}

  bool parse(JsonValue& out) {
    skip_ws();
    if (!value(out, 0)) return false;
    skip_ws();
    if (pos_ != s_.size()) return fail("unexpected data after the JSON value");
    return true;
  }

  std::string error;

 private:
  bool fail(const char* why) {
    if (error.empty()) error = std::string(why) + " at byte " + std::to_string(pos_);
    return false;
  }
  bool eof() const { return pos_ >= s_.size(); }
  char peek() const { return eof() ? '\0' : s_[pos_]; }
  void skip_ws() {
    while (!eof() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return fail("invalid literal");
    pos_ += word.size();
    return true;
  }

  bool value(JsonValue& out, int depth) {
    if (depth > limits_.max_depth) return fail("nesting too deep");
    if (eof()) return fail("unexpected end of input");
    const char c = peek();
    switch (c) {
      case '{': return object(out, depth);
      case '[': return array(out, depth);
      case '"': out.kind = JsonValue::Kind::String; return string(out.text);
      case 't': out.kind = JsonValue::Kind::Bool; out.boolean = true; return literal("true");
      case 'f': out.kind = JsonValue::Kind::Bool; out.boolean = false; return literal("false");
      case 'n': out.kind = JsonValue::Kind::Null; return literal("null");
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return number(out);
        return fail("unexpected character");
    }
  }

  bool object(JsonValue& out, int depth) {
    out.kind = JsonValue::Kind::Object;
    ++pos_;
    skip_ws();
    if (peek() == '}') { ++pos_; return true; }
    for (;;) {
      skip_ws();
      if (peek() != '"') return fail("expected a string key");
      std::string k;
      if (!string(k)) return false;
      for (const auto& m : out.members) {
        if (m.first == k) return fail("duplicate key");
      }
      skip_ws();
      if (peek() != ':') return fail("expected ':'");
      ++pos_;
      skip_ws();
      JsonValue v;
      if (!value(v, depth + 1)) return false;
      out.members.emplace_back(std::move(k), std::move(v));
      skip_ws();
      if (peek() == ',') { ++pos_; continue; }
      if (peek() == '}') { ++pos_; return true; }
      return fail("expected ',' or '}'");
    }
  }

  bool array(JsonValue& out, int depth) {
    out.kind = JsonValue::Kind::Array;
    ++pos_;
    skip_ws();
    if (peek() == ']') { ++pos_; return true; }
    for (;;) {
      skip_ws();
      JsonValue v;
      if (!value(v, depth + 1)) return false;
      out.items.push_back(std::move(v));
      skip_ws();
      if (peek() == ',') { ++pos_; continue; }
      if (peek() == ']') { ++pos_; return true; }
      return fail("expected ',' or ']'");
    }
  }

  static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  bool hex4(unsigned& cp) {
    if (s_.size() - pos_ < 4) return fail("truncated \\u escape");
    cp = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = hexval(s_[pos_++]);
      if (h < 0) return fail("bad \\u escape");
      cp = (cp << 4) | static_cast<unsigned>(h);
    }
    return true;
  }

  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  bool string(std::string& out) {
    ++pos_;  // opening quote
    for (;;) {
      if (eof()) return fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in string");
      if (c != '\\') { out += c; continue; }
      if (eof()) return fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.substr(pos_, 2) != "\\u") return fail("lone surrogate");
            pos_ += 2;
            unsigned lo = 0;
            if (!hex4(lo)) return false;
            if (lo < 0xDC00 || lo > 0xDFFF) return fail("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return fail("lone surrogate");
          }
          utf8(out, cp);
          break;
        }
        default: return fail("bad escape");
      }
    }
  }

  static bool digit(char c) { return c >= '0' && c <= '9'; }

  bool number(JsonValue& out) {
    out.kind = JsonValue::Kind::Number;
    const std::size_t start = pos_;
    bool integer = true;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (digit(peek())) {
      while (digit(peek())) ++pos_;
    } else {
      return fail("bad number");
    }
    if (peek() == '.') {
      integer = false;
      ++pos_;
      if (!digit(peek())) return fail("bad number fraction");
      while (digit(peek())) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integer = false;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!digit(peek())) return fail("bad number exponent");
      while (digit(peek())) ++pos_;
    }
    out.text = std::string(s_.substr(start, pos_ - start));
    out.is_integer = integer;
    out.negative = out.text[0] == '-';
    errno = 0;
    out.number = std::strtod(out.text.c_str(), nullptr);
    if (!std::isfinite(out.number)) return fail("number out of range");
    if (integer) {
      std::uint64_t mag = 0;
      bool fits = true;
      for (std::size_t i = out.negative ? 1 : 0; i < out.text.size(); ++i) {
        const auto d = static_cast<std::uint64_t>(out.text[i] - '0');
        if (mag > (UINT64_MAX - d) / 10) { fits = false; break; }
        mag = mag * 10 + d;
      }
      out.integer = fits ? mag : 0;
      out.integer_fits = fits;
    }
    return true;
  }

  std::string_view s_;
  JsonLimits limits_;
  std::size_t pos_ = 0;
};

}  // namespace

JsonParseResult parse_json(std::string_view text, JsonLimits limits) {
  JsonParseResult r;
  if (text.size() > limits.max_bytes) {
    r.error = "input is " + std::to_string(text.size()) + " bytes, more than " +
              std::to_string(limits.max_bytes);
    return r;
  }
  Parser p(text, limits);
  r.ok = p.parse(r.value);
  if (!r.ok) {
    r.error = p.error;
    r.value = JsonValue{};
  }
  return r;
}

}  // namespace smaint
