// The CLI's local profile folder (default ~/.parley, 0700): the account's credentials
// (written atomically, 0600) and the local store local.db (client/local_store: keys, sessions,
// history; 0600).
#pragma once

#include <cstdint>
#include <filesystem>
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

  // nullopt if there is no credentials file (not registered). Throws std::runtime_error naming
  // the file if it cannot be read, or naming the file, the line and what was expected there if
  // it is malformed (a number that is not one, a bad token, a required key missing).
  std::optional<credentials> load_credentials() const;
  void save_credentials(const credentials& c) const;

  std::filesystem::path local_store_path() const { return dir_ / "local.db"; }

 private:
  void write_file(const std::string& name, const std::string& content) const;

  std::filesystem::path dir_;
};

std::string to_hex(const std::string& bytes);
std::optional<std::string> from_hex(const std::string& hex);

// A fresh idempotency key for SendMessage.client_msg_id or CreateGroup.client_request_id: 16
// random bytes (OpenSSL's generator) in hex, 32 characters. Throws std::runtime_error if no
// randomness is available.
std::string new_request_id();

}  // namespace parley::client
