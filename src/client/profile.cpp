#include "client/profile.hpp"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "media/blob_store.hpp"

namespace parley::client {

std::string to_hex(const std::string& bytes) { return media::to_hex(bytes); }

std::string new_request_id() {
  std::string bytes(16, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()), 16) != 1) {
    throw std::runtime_error("no randomness available");
  }
  return to_hex(bytes);
}

std::optional<std::string> from_hex(const std::string& hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
  }
  return out;
}

profile::profile(std::filesystem::path dir) : dir_(std::move(dir)) {}

void profile::write_file(const std::string& name, const std::string& content) const {
  std::filesystem::create_directories(dir_);
  ::chmod(dir_.c_str(), 0700);
  const auto final_path = dir_ / name;
  const auto temp_path = dir_ / (name + ".tmp");
  const int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot write " + temp_path.string());
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      ::close(fd);
      throw std::runtime_error("cannot write " + temp_path.string());
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  std::filesystem::rename(temp_path, final_path);
}

std::optional<credentials> profile::load_credentials() const {
  const auto file = dir_ / "credentials";
  std::error_code ec;
  if (!std::filesystem::exists(file, ec) && !ec) return std::nullopt;
  std::ifstream in(file);
  if (ec || !in) {
    throw std::runtime_error("cannot read the credentials file " + file.string() +
                             (ec ? ": " + ec.message() : std::string()));
  }
  // Which file, what is wrong, and what it should hold: what a person needs to repair it.
  auto malformed = [&](const std::string& what) {
    return std::runtime_error(
        "malformed credentials file " + file.string() + ": " + what +
        " (expected the lines server=URL, username=NAME, user_id=NUMBER, device_id=NUMBER and "
        "token=64 hex digits, as 'parley register' writes them)");
  };
  credentials c;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string where = "line " + std::to_string(number) + ": ";
    if (!line.empty() && line.back() == '\r') line.pop_back();  // edited on Windows
    if (line.empty()) continue;
    const auto eq = line.find('=');
    // Not echoed: the line may be a broken token.
    if (eq == std::string::npos) throw malformed(where + "not KEY=VALUE");
    const std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    auto decimal = [&]() -> std::uint64_t {
      std::uint64_t n = 0;
      const char* end = value.data() + value.size();
      const auto [used, err] = std::from_chars(value.data(), end, n);
      if (value.empty() || err != std::errc{} || used != end) {
        throw malformed(where + key + " must be a decimal number, got '" + value + "'");
      }
      return n;
    };
    if (key == "server") {
      c.server = value;
    } else if (key == "username") {
      c.username = value;
    } else if (key == "user_id") {
      c.user_id = decimal();
    } else if (key == "device_id") {
      c.device_id = decimal();
    } else if (key == "token") {
      auto t = from_hex(value);
      if (!t || t->size() != 32) {
        // Not echoed: it is the device's secret.
        throw malformed(where + "token must be 64 hex digits, got " + std::to_string(value.size()) +
                        " characters" + (t ? "" : ", not all hex digits"));
      }
      c.token = *t;
    }
    // Other keys are left for a later version of parley.
  }
  std::string missing;
  if (c.username.empty()) missing += " username";
  if (c.device_id == 0) missing += " device_id";
  if (c.token.size() != 32) missing += " token";
  if (!missing.empty()) throw malformed("missing or empty:" + missing);
  return c;
}

void profile::save_credentials(const credentials& c) const {
  std::ostringstream out;
  out << "server=" << c.server << "\nusername=" << c.username << "\nuser_id=" << c.user_id
      << "\ndevice_id=" << c.device_id << "\ntoken=" << to_hex(c.token) << '\n';
  write_file("credentials", out.str());
}

}  // namespace parley::client
