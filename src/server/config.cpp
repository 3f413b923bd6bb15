#include "server/config.hpp"

#include <toml++/toml.h>

#include <stdexcept>

namespace parley::server {

void parse_listen(const std::string& text, config& out) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    throw std::invalid_argument("listen address must be HOST:PORT, got '" + text + "'");
  }
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string port = text.substr(colon + 1);
  std::size_t used = 0;
  unsigned long value = 0;
  try {
    value = std::stoul(port, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != port.size() || port.empty() || value > 65535) {
    throw std::invalid_argument("bad port in listen address '" + text + "'");
  }
  out.listen_host = host;
  out.listen_port = static_cast<std::uint16_t>(value);
}

config load_config_file(const std::filesystem::path& file, config c) {
  toml::table t;
  try {
    t = toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    throw std::runtime_error("config " + file.string() + ": " + std::string(e.description()));
  }
  auto positive = [&](std::string_view key, std::optional<std::int64_t> v, auto& target) {
    if (!v) return;
    if (*v <= 0) throw std::runtime_error("config: " + std::string(key) + " must be positive");
    target = static_cast<std::remove_reference_t<decltype(target)>>(*v);
  };
  auto check_type = [&](const toml::node_view<toml::node>& n, std::string_view key, bool ok) {
    if (n && !ok) throw std::runtime_error("config: " + std::string(key) + " has the wrong type");
  };

  check_type(t["listen"], "listen", t["listen"].is_string());
  if (auto v = t["listen"].value<std::string>()) parse_listen(*v, c);
  check_type(t["data"], "data", t["data"].is_string());
  if (auto v = t["data"].value<std::string>()) c.data_dir = *v;
  check_type(t["threads"], "threads", t["threads"].is_integer());
  positive("threads", t["threads"].value<std::int64_t>(), c.threads);
  check_type(t["node_id"], "node_id", t["node_id"].is_integer());
  if (auto v = t["node_id"].value<std::int64_t>()) {
    if (*v < 0 || *v > 1023) throw std::runtime_error("config: node_id must be 0-1023");
    c.node_id = static_cast<std::uint64_t>(*v);
  }
  check_type(t["fsync"], "fsync", t["fsync"].is_boolean());
  if (auto v = t["fsync"].value<bool>()) c.fsync = *v;

  auto l = t["limits"];
  positive("limits.max_frame_bytes", l["max_frame_bytes"].value<std::int64_t>(),
           c.limits.max_frame_bytes);
  positive("limits.max_payload_bytes", l["max_payload_bytes"].value<std::int64_t>(),
           c.limits.max_payload_bytes);
  positive("limits.max_in_flight", l["max_in_flight"].value<std::int64_t>(), c.max_in_flight);
  positive("limits.max_outbound_frames", l["max_outbound_frames"].value<std::int64_t>(),
           c.max_outbound_frames);
  positive("limits.max_outbound_bytes", l["max_outbound_bytes"].value<std::int64_t>(),
           c.max_outbound_bytes);
  positive("limits.drain_page", l["drain_page"].value<std::int64_t>(), c.drain_page);
  std::int64_t auth_ms = 0;
  positive("limits.auth_timeout_ms", l["auth_timeout_ms"].value<std::int64_t>(), auth_ms);
  if (auth_ms > 0) c.auth_timeout = std::chrono::milliseconds(auth_ms);
  if (c.limits.max_payload_bytes + 1024 > c.limits.max_frame_bytes) {
    throw std::runtime_error(
        "config: limits.max_frame_bytes must exceed max_payload_bytes by 1 KiB");
  }
  return c;
}

}  // namespace parley::server
