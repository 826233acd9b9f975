// A minimal JSON reader and writer for the native runner: io.json, expected.json, inputs.json in; one line out.
//
// Hand-written because no single-header JSON library is available offline to the build, and the runner must build
// from the executorch wheel and a compiler alone. Reader: RFC 8259 values; \u escapes are decoded to UTF-8 (no
// surrogate pairing: keys and values here are ASCII). Arrays whose elements are all numbers are kept as a packed
// std::vector<double>, so a few-MB inputs.json of token ids costs 8 bytes per id, not a ~100-byte tree node each:
// the runner reports its own peak RSS, and the parser should not dominate it.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mini_json {

struct Value {
  enum Type { Null, Bool, Num, Str, Arr, Obj } type = Null;
  bool b = false;
  double num = 0;
  std::string str;
  bool packed = false;                             // Arr only: elements are in nums, not items
  std::vector<double> nums;                        // Arr of numbers
  std::vector<Value> items;                        // Arr of anything else
  std::vector<std::pair<std::string, Value>> obj;  // Obj, in file order

  size_t size() const { return type == Obj ? obj.size() : (packed ? nums.size() : items.size()); }
  const Value* get(const std::string& key) const {
    for (const auto& kv : obj)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
};

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  Value parse() {
    Value v = value();
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;
  int depth_ = 0;

  [[noreturn]] void fail(const char* what) {
    throw std::runtime_error(std::string("invalid JSON at byte ") + std::to_string(i_) + ": " + what);
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }
  void literal(const char* word) {
    for (const char* p = word; *p; ++p, ++i_)
      if (i_ >= s_.size() || s_[i_] != *p) fail("bad literal");
  }

  Value value() {
    ws();
    if (i_ >= s_.size()) fail("unexpected end");
    if (++depth_ > 64) fail("nested too deeply");
    Value v;
    char c = s_[i_];
    if (c == '{') v = object();
    else if (c == '[') v = array();
    else if (c == '"') v.type = Value::Str, v.str = string();
    else if (c == 't') literal("true"), v.type = Value::Bool, v.b = true;
    else if (c == 'f') literal("false"), v.type = Value::Bool;
    else if (c == 'n') literal("null");
    else v.type = Value::Num, v.num = number();
    --depth_;
    return v;
  }

  double number() {
    const char* begin = s_.data() + i_;
    char* end = nullptr;
    double d = std::strtod(begin, &end);  // locale is "C": the runner never calls setlocale
    if (end == begin) fail("expected a value");
    i_ += static_cast<size_t>(end - begin);
    return d;
  }

  Value array() {
    Value v;
    v.type = Value::Arr;
    v.packed = true;
    ++i_;
    if (eat(']')) return v;
    do {
      Value item = value();
      if (v.packed && item.type == Value::Num) {
        v.nums.push_back(item.num);
        continue;
      }
      if (v.packed) {  // first non-number: move what was packed into tree nodes
        v.packed = false;
        for (double d : v.nums) {
          Value n;
          n.type = Value::Num, n.num = d;
          v.items.push_back(std::move(n));
        }
        v.nums.clear();
      }
      v.items.push_back(std::move(item));
    } while (eat(','));
    if (!eat(']')) fail("expected ',' or ']'");
    return v;
  }

  Value object() {
    Value v;
    v.type = Value::Obj;
    ++i_;
    if (eat('}')) return v;
    do {
      ws();
      if (i_ >= s_.size() || s_[i_] != '"') fail("expected a key");
      std::string key = string();
      if (!eat(':')) fail("expected ':'");
      v.obj.emplace_back(std::move(key), value());
    } while (eat(','));
    if (!eat('}')) fail("expected ',' or '}'");
    return v;
  }

  std::string string() {
    std::string out;
    ++i_;  // opening quote
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated escape");
      char e = s_[i_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': utf8(out); break;
        default: out += e;  // \" \\ \/
      }
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;
    return out;
  }

  void utf8(std::string& out) {
    if (i_ + 4 > s_.size()) fail("short \\u escape");
    unsigned cp = 0;
    auto r = std::from_chars(s_.data() + i_, s_.data() + i_ + 4, cp, 16);
    if (r.ptr != s_.data() + i_ + 4) fail("bad \\u escape");
    i_ += 4;
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6)), out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xE0 | (cp >> 12)), out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
};

inline Value parse(const std::string& text) { return Parser(text).parse(); }

// ---------------------------------------------------------------- writer

inline std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\', out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// Shortest text that reads back as the same double (what Python's json.dumps writes); NaN/inf are not JSON: null.
inline std::string number(double d) {
  if (!std::isfinite(d)) return "null";
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, d);
  return std::string(buf, r.ptr);
}

// Python's round(v, ndigits) for the magnitudes reported here (milliseconds, MiB, logits).
inline double round_to(double v, int ndigits) {
  double scale = std::pow(10.0, ndigits);
  return std::round(v * scale) / scale;
}

// An object written in insertion order; values are JSON text made by the helpers above.
class Writer {
 public:
  Writer& raw(const std::string& key, const std::string& json) {
    body_ += (body_.empty() ? "" : ",") + quote(key) + ":" + json;
    return *this;
  }
  Writer& str(const std::string& key, const std::string& v) { return raw(key, quote(v)); }
  Writer& num(const std::string& key, double v) { return raw(key, number(v)); }
  Writer& integer(const std::string& key, long long v) { return raw(key, std::to_string(v)); }
  Writer& boolean(const std::string& key, bool v) { return raw(key, v ? "true" : "false"); }
  Writer& merge(const Writer& other) {  // append other's fields after this one's
    body_ += (body_.empty() || other.body_.empty() ? "" : ",") + other.body_;
    return *this;
  }
  std::string text() const { return "{" + body_ + "}"; }

 private:
  std::string body_;
};

}  // namespace mini_json
