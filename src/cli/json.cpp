#include "cli/json.hpp"

#include <cstdio>

namespace parley::cli {
namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 if invalid.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else
    return 0;
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are invalid.
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)) return 0;
  if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
  return n;
}

}  // namespace

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size();) {
    const char c = s[i];
    const std::size_t n = utf8_length(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
          out += buf;
        } else {
          out += c;
        }
    }
    ++i;
  }
  out += '"';
  return out;
}

std::string printable(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_length(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else if (n == 1) {
      const auto c = static_cast<unsigned char>(s[i]);
      out += (c < 0x20 && c != '\t') || c == 0x7f ? '?' : static_cast<char>(c);
      ++i;
    } else {
      // C1 controls (U+0080-U+009F) and the bidirectional overrides and isolates (U+202A-
      // U+202E, U+2066-U+2069) can rewrite what a terminal shows: replaced too.
      const auto b0 = static_cast<unsigned char>(s[i]);
      const auto b1 = static_cast<unsigned char>(s[i + 1]);
      const auto b2 = n == 3 ? static_cast<unsigned char>(s[i + 2]) : 0;
      const bool c1 = n == 2 && b0 == 0xC2 && b1 >= 0x80 && b1 <= 0x9F;
      const bool bidi = n == 3 && b0 == 0xE2 &&
                        ((b1 == 0x80 && b2 >= 0xAA && b2 <= 0xAE) ||
                         (b1 == 0x81 && b2 >= 0xA6 && b2 <= 0xA9));
      if (c1 || bidi) {
        out += '?';
      } else {
        out.append(s.substr(i, n));
      }
      i += n;
    }
  }
  return out;
}

void json_object::key(std::string_view k) {
  if (!body_.empty()) body_ += ", ";
  body_ += json_string(k);
  body_ += ": ";
}

json_object& json_object::field(std::string_view k, std::string_view value) {
  key(k);
  body_ += json_string(value);
  return *this;
}

json_object& json_object::number(std::string_view k, std::uint64_t value) {
  key(k);
  body_ += std::to_string(value);
  return *this;
}

json_object& json_object::boolean(std::string_view k, bool value) {
  key(k);
  body_ += value ? "true" : "false";
  return *this;
}

json_object& json_object::strings(std::string_view k, const std::vector<std::string>& values) {
  key(k);
  body_ += "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) body_ += ", ";
    body_ += json_string(values[i]);
  }
  body_ += "]";
  return *this;
}

json_object& json_object::objects(std::string_view k, const std::vector<json_object>& values) {
  key(k);
  body_ += "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) body_ += ", ";
    body_ += values[i].str();
  }
  body_ += "]";
  return *this;
}

json_object& json_object::object(std::string_view k, const json_object& value) {
  key(k);
  body_ += value.str();
  return *this;
}

}  // namespace parley::cli
