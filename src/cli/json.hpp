// Just enough JSON output for the CLI's --json mode: one object per line, stable field names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace parley::cli {

// A JSON string literal of `s`; invalid UTF-8 becomes U+FFFD, control characters are escaped.
std::string json_string(std::string_view s);

// Text safe to print on a terminal: invalid UTF-8 and control characters (but tab) replaced.
std::string printable(std::string_view s);

class json_object {
 public:
  json_object& field(std::string_view key, std::string_view value);
  json_object& field(std::string_view key, const char* value) {
    return field(key, std::string_view(value));
  }
  json_object& number(std::string_view key, std::uint64_t value);
  json_object& boolean(std::string_view key, bool value);
  // An array of strings.
  json_object& strings(std::string_view key, const std::vector<std::string>& values);
  // An array of objects.
  json_object& objects(std::string_view key, const std::vector<json_object>& values);
  // An object.
  json_object& object(std::string_view key, const json_object& value);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  void key(std::string_view k);
  std::string body_;
};

}  // namespace parley::cli
