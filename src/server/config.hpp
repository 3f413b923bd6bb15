// parleyd's configuration: defaults, then an optional TOML file, then command-line flags.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "wire/limits.hpp"

namespace parley::server {

struct config {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8080;  // 0: any free port (printed on start)
  std::filesystem::path data_dir = "./data";
  unsigned threads = 0;  // 0: one per core
  std::uint64_t node_id = 0;
  bool fsync = true;

  wire::limits limits;
  std::size_t max_in_flight = 256;         // requests awaiting a response, per connection
  std::size_t max_outbound_frames = 4096;  // bounded outgoing queue, per connection
  std::size_t max_outbound_bytes = 8 * 1024 * 1024;
  std::size_t drain_page = 256;     // queue events read per page on reconnect
  std::size_t max_bad_frames = 16;  // consecutive bad frames before closing
  std::chrono::milliseconds auth_timeout{10'000};
};

// Reads a TOML file over `base`. Throws std::runtime_error naming the key on a bad value.
// Keys: listen = "HOST:PORT", data = "DIR", threads, node_id, fsync, and a [limits] table with
// max_frame_bytes, max_payload_bytes, max_in_flight, max_outbound_frames, max_outbound_bytes,
// drain_page, auth_timeout_ms.
config load_config_file(const std::filesystem::path& file, config base);

// "HOST:PORT" -> host, port. Throws std::invalid_argument.
void parse_listen(const std::string& text, config& out);

}  // namespace parley::server
