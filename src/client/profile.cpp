#include "client/profile.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace parley::client {

std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
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
  std::ifstream in(dir_ / "credentials");
  if (!in) return std::nullopt;
  credentials c;
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    if (key == "server")
      c.server = value;
    else if (key == "username")
      c.username = value;
    else if (key == "user_id")
      c.user_id = std::stoull(value);
    else if (key == "device_id")
      c.device_id = std::stoull(value);
    else if (key == "token") {
      auto t = from_hex(value);
      if (!t || t->size() != 32)
        throw std::runtime_error("corrupt token in " + (dir_ / "credentials").string());
      c.token = *t;
    }
  }
  if (c.username.empty() || c.device_id == 0 || c.token.size() != 32) {
    throw std::runtime_error("incomplete credentials in " + (dir_ / "credentials").string());
  }
  return c;
}

void profile::save_credentials(const credentials& c) const {
  std::ostringstream out;
  out << "server=" << c.server << "\nusername=" << c.username << "\nuser_id=" << c.user_id
      << "\ndevice_id=" << c.device_id << "\ntoken=" << to_hex(c.token) << '\n';
  write_file("credentials", out.str());
}

}  // namespace parley::client
