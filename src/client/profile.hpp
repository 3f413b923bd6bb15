// The CLI's local profile folder (default ~/.parley): credentials and small per-chat state.
// Files are written atomically (temp file + rename) and readable only by the user (0600).
// Issue 4 replaces this with a real local store holding keys, sessions and history.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace parley::client {

struct credentials {
  std::string server;
  std::string username;
  std::uint64_t user_id = 0;
  std::uint64_t device_id = 0;
  std::string token;  // 32 raw bytes
};

class profile {
 public:
  explicit profile(std::filesystem::path dir);

  const std::filesystem::path& dir() const { return dir_; }

  // nullopt if not registered; throws std::runtime_error if the file is corrupt.
  std::optional<credentials> load_credentials() const;
  void save_credentials(const credentials& c) const;

  // The newest message id received from each peer (what `read` marks as read).
  std::uint64_t last_received(const std::string& peer) const;
  void record_received(const std::string& peer, std::uint64_t message_id);
  void save_state() const;

 private:
  void write_file(const std::string& name, const std::string& content) const;

  std::filesystem::path dir_;
  std::map<std::string, std::uint64_t> last_received_;
};

std::string to_hex(const std::string& bytes);
std::optional<std::string> from_hex(const std::string& hex);

}  // namespace parley::client
