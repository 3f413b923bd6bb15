#include "server/config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <map>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/source_limit.hpp"
#include "media/s3/sigv4.hpp"
#include "redis/redis_client.hpp"

namespace parley::server {

namespace {

// As --threads (apps/parleyd/main.cpp): the file and the flag accept the same range.
constexpr std::int64_t min_threads = 1;
constexpr std::int64_t max_threads = 256;
// The smallest outgoing queue per connection: one frame of the largest a client must accept.
constexpr std::size_t min_outbound_bytes = 1024 * 1024;
// The longest duration a setting may have: ten years.
constexpr std::int64_t max_duration_s = 3650LL * 86400;

// Every key the file may hold, per table: "" is the top level, any other name a table one level
// down ([limits]). Anything else in the file stops start-up, so that a misspelt key is not
// silently ignored. A new key, or a new table, is added here and read in load_config_file.
// The value at `n` as a T, nullopt when the key is absent; a value of another type stops
// start-up naming `key`. A number may be written as an integer or a float; an integer may not.
template <class T, class View>
std::optional<T> typed(const View& n, std::string_view key) {
  bool ok = false;
  if constexpr (std::is_same_v<T, std::string>) {
    ok = n.is_string();
  } else if constexpr (std::is_same_v<T, bool>) {
    ok = n.is_boolean();
  } else if constexpr (std::is_same_v<T, double>) {
    ok = n.is_number();
  } else {
    static_assert(std::is_same_v<T, std::int64_t>);
    ok = n.is_integer();
  }
  if (n && !ok) throw std::runtime_error("config: " + std::string(key) + " has the wrong type");
  return n.template value<T>();
}

const std::map<std::string, std::vector<std::string>, std::less<>>& known_keys() {
  static const std::map<std::string, std::vector<std::string>, std::less<>> keys{
      {"",
       {"listen", "data", "threads", "node_id", "fsync", "metrics_listen", "store", "presence",
        "presence_ttl_s", "store_writers"}},
      {"limits",
       {"max_frame_bytes", "max_payload_bytes", "max_in_flight", "max_outbound_frames",
        "max_outbound_bytes", "drain_page", "auth_timeout_ms", "max_unauthenticated_frame_bytes",
        "max_group_members", "group_receipts_ms"}},
      {"rate_limits", {"register_per_address",     "register_per_address_burst",
                       "register_global",          "register_global_burst",
                       "bad_login_per_address",    "bad_login_per_address_burst",
                       "key_fetch_per_device",     "key_fetch_per_device_burst",
                       "one_time_prekey_per_pair", "one_time_prekey_per_pair_burst",
                       "send_per_device",          "send_per_device_burst",
                       "typing_per_device",        "typing_per_device_burst",
                       "group_change_per_device",  "group_change_per_device_burst",
                       "group_read_per_device",    "group_read_per_device_burst",
                       "media_per_device",         "media_per_device_burst"}},
      {"connections",
       {"max_connections", "max_unauthenticated", "max_unauthenticated_per_address",
        "unlimited_addresses", "reserved_fds", "memory_budget_bytes"}},
      {"storage", {"reserve_bytes", "dedupe_days", "max_pending_writes", "memtable_budget_bytes"}},
      {"tls", {"cert", "key", "allow_plaintext"}},
      {"media",
       {"listen", "public_url", "quota_bytes", "upload_url_ttl_s", "download_url_ttl_s",
        "unreferenced_retention_s", "sweep_interval_s", "max_transfers",
        "max_transfers_per_address", "store", "s3_endpoint", "s3_bucket", "s3_region",
        "s3_access_key", "s3_secret_key", "s3_ca_file"}},
  };
  return keys;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

bool listed(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// Throws std::runtime_error naming the first key or table of `file` that known_keys() lacks,
// with what is accepted in its place.
void refuse_unknown_keys(const toml::table& file) {
  const auto& known = known_keys();
  const auto& top = known.at("");
  std::vector<std::string> tables;
  for (const auto& [name, keys] : known) {
    if (!name.empty()) tables.push_back("[" + name + "]");
  }
  for (auto&& [key, node] : file) {
    const std::string name(key.str());
    if (listed(top, name)) continue;
    const auto table = name.empty() ? known.end() : known.find(name);
    if (table == known.end()) {
      if (node.is_table()) {
        throw std::runtime_error("config: unknown table [" + name +
                                 "]; known tables: " + join(tables));
      }
      throw std::runtime_error("config: unknown key '" + name + "'; known top-level keys: " +
                               join(top) + ", and the tables " + join(tables));
    }
    if (!node.is_table()) {
      throw std::runtime_error("config: " + name + " must be a table ([" + name + "])");
    }
    for (auto&& [sub, value] : *node.as_table()) {
      if (!listed(table->second, sub.str())) {
        throw std::runtime_error("config: unknown key '" + name + "." + std::string(sub.str()) +
                                 "'; [" + name + "] takes " + join(table->second));
      }
    }
  }
}

}  // namespace

namespace {

// "HOST:PORT" (HOST may be a bracketed IPv6 address) -> host, port. Throws
// std::invalid_argument naming `what`.
std::pair<std::string, std::uint16_t> host_port(const std::string& text, const char* what) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    throw std::invalid_argument(std::string(what) + " must be HOST:PORT, got '" + text + "'");
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
    throw std::invalid_argument("bad port in " + std::string(what) + " '" + text + "'");
  }
  return {std::move(host), static_cast<std::uint16_t>(value)};
}

}  // namespace

void parse_listen(const std::string& text, config& out) {
  std::tie(out.listen_host, out.listen_port) = host_port(text, "listen address");
}

void parse_metrics_listen(const std::string& text, config& out) {
  std::tie(out.metrics_host, out.metrics_port) = host_port(text, "metrics address");
}

void parse_media_listen(const std::string& text, config& out) {
  std::tie(out.media.listen_host, out.media.listen_port) = host_port(text, "media address");
  out.media.listen_set = true;
}

config load_config_file(const std::filesystem::path& file, config c) {
  toml::table t;
  try {
    t = toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    throw std::runtime_error("config " + file.string() + ": " + std::string(e.description()));
  }
  refuse_unknown_keys(t);
  auto positive = [&](std::string_view key, const toml::node_view<toml::node>& n, auto& target) {
    const auto v = typed<std::int64_t>(n, key);
    if (!v) return;
    if (*v <= 0) throw std::runtime_error("config: " + std::string(key) + " must be positive");
    target = static_cast<std::remove_reference_t<decltype(target)>>(*v);
  };
  // A duration: positive and at most ten years (in `unit`s), so that a clock's now() plus or
  // minus it (a timer's deadline, the sweep's cut-off) cannot overflow.
  auto duration = [&](std::string_view key, const toml::node_view<toml::node>& n,
                      std::int64_t units_per_second, std::int64_t& target) {
    positive(key, n, target);
    if (target > max_duration_s * units_per_second) {
      throw std::runtime_error("config: " + std::string(key) + " must be at most " +
                               std::to_string(max_duration_s * units_per_second) + " (ten years)");
    }
  };

  if (auto v = typed<std::string>(t["listen"], "listen")) parse_listen(*v, c);
  if (auto v = typed<std::string>(t["data"], "data")) c.data_dir = *v;
  if (auto v = typed<std::int64_t>(t["threads"], "threads")) {
    if (*v < min_threads || *v > max_threads) {
      throw std::runtime_error("config: threads must be " + std::to_string(min_threads) + "-" +
                               std::to_string(max_threads) + ", got " + std::to_string(*v));
    }
    c.threads = static_cast<unsigned>(*v);
  }
  if (auto v = typed<std::int64_t>(t["node_id"], "node_id")) {
    if (*v < 0 || *v > 1023) throw std::runtime_error("config: node_id must be 0-1023");
    c.node_id = static_cast<std::uint64_t>(*v);
  }
  if (auto v = typed<bool>(t["fsync"], "fsync")) c.fsync = *v;
  if (auto v = typed<std::string>(t["store"], "store")) c.store_url = *v;
  if (auto v = typed<std::string>(t["presence"], "presence")) c.presence_url = *v;
  if (auto v = typed<std::int64_t>(t["presence_ttl_s"], "presence_ttl_s")) {
    if (*v < 3 || *v > 3600) throw std::runtime_error("config: presence_ttl_s must be 3-3600");
    c.presence_ttl = std::chrono::seconds(*v);
  }
  if (auto v = typed<std::int64_t>(t["store_writers"], "store_writers")) {
    if (*v < 1 || *v > 16) throw std::runtime_error("config: store_writers must be 1-16");
    c.store_writers = static_cast<std::size_t>(*v);
  }

  auto l = t["limits"];
  positive("limits.max_frame_bytes", l["max_frame_bytes"], c.limits.max_frame_bytes);
  positive("limits.max_payload_bytes", l["max_payload_bytes"], c.limits.max_payload_bytes);
  positive("limits.max_in_flight", l["max_in_flight"], c.max_in_flight);
  positive("limits.max_outbound_frames", l["max_outbound_frames"], c.max_outbound_frames);
  positive("limits.max_outbound_bytes", l["max_outbound_bytes"], c.max_outbound_bytes);
  positive("limits.drain_page", l["drain_page"], c.drain_page);
  std::int64_t auth_ms = 0;
  duration("limits.auth_timeout_ms", l["auth_timeout_ms"], 1000, auth_ms);
  if (auth_ms > 0) c.auth_timeout = std::chrono::milliseconds(auth_ms);

  positive("limits.max_unauthenticated_frame_bytes", l["max_unauthenticated_frame_bytes"],
           c.limits.max_unauthenticated_frame_bytes);
  positive("limits.max_group_members", l["max_group_members"], c.limits.max_group_members);
  if (c.limits.max_group_members > 1024) {
    // A CreateGroup event and a GroupInfo list every member in one frame; the protocol's
    // frame and SDK limits are sized for at most 1,024.
    throw std::runtime_error("config: limits.max_group_members must be at most 1024");
  }
  std::int64_t group_receipts_ms = 0;
  duration("limits.group_receipts_ms", l["group_receipts_ms"], 1000, group_receipts_ms);
  if (group_receipts_ms > 0) c.group_receipts_interval = std::chrono::milliseconds(group_receipts_ms);

  if (auto v = typed<std::string>(t["metrics_listen"], "metrics_listen")) {
    parse_metrics_listen(*v, c);
  }

  // [rate_limits]: NAME is requests per minute (0 turns the limit off), NAME_burst how many
  // may come at once.
  auto r = t["rate_limits"];
  auto rate = [&](const std::string& name, rate_limit& target) {
    const std::string key = "rate_limits." + name;
    if (auto v = typed<double>(r[name], key)) {
      if (!(*v >= 0)) throw std::runtime_error("config: " + key + " must be 0 or more per minute");
      target.per_minute = *v;
    }
    if (auto v = typed<double>(r[name + "_burst"], key + "_burst")) {
      if (!(*v >= 1)) throw std::runtime_error("config: " + key + "_burst must be at least 1");
      target.burst = *v;
    }
  };
  rate("register_per_address", c.rates.register_per_address);
  rate("register_global", c.rates.register_global);
  rate("bad_login_per_address", c.rates.bad_login_per_address);
  rate("key_fetch_per_device", c.rates.key_fetch_per_device);
  rate("one_time_prekey_per_pair", c.rates.one_time_prekey_per_pair);
  rate("send_per_device", c.rates.send_per_device);
  rate("typing_per_device", c.rates.typing_per_device);
  rate("group_change_per_device", c.rates.group_change_per_device);
  rate("group_read_per_device", c.rates.group_read_per_device);
  rate("media_per_device", c.rates.media_per_device);

  auto media = t["media"];
  if (auto v = typed<std::string>(media["listen"], "media.listen")) parse_media_listen(*v, c);
  if (auto v = typed<std::string>(media["public_url"], "media.public_url")) {
    if (v->rfind("http://", 0) != 0 && v->rfind("https://", 0) != 0) {
      throw std::runtime_error("config: media.public_url must start with http:// or https://");
    }
    while (!v->empty() && v->back() == '/') v->pop_back();
    c.media.public_url = *v;
  }
  if (auto v = typed<std::int64_t>(media["quota_bytes"], "media.quota_bytes")) {
    if (*v < 0) throw std::runtime_error("config: media.quota_bytes must be 0 (none) or more");
    c.media.quota_bytes = static_cast<std::uint64_t>(*v);
  }
  auto seconds = [&](std::string_view key, const char* name, std::chrono::seconds& target) {
    std::int64_t v = 0;
    duration(key, media[name], 1, v);
    if (v > 0) target = std::chrono::seconds(v);
  };
  // A URL lives at most as long as S3 can presign one (7 days), so that a slot's
  // expires_at_ms is when its URL stops working, whichever store signs it.
  auto url_seconds = [&](std::string_view key, const char* name, std::chrono::seconds& target) {
    seconds(key, name, target);
    if (target > media::s3::max_presign_expiry) {
      throw std::runtime_error("config: " + std::string(key) + " must be at most " +
                               std::to_string(media::s3::max_presign_expiry.count()) +
                               " (7 days, the longest an S3 URL can be presigned for)");
    }
  };
  url_seconds("media.upload_url_ttl_s", "upload_url_ttl_s", c.media.upload_url_ttl);
  url_seconds("media.download_url_ttl_s", "download_url_ttl_s", c.media.download_url_ttl);
  seconds("media.unreferenced_retention_s", "unreferenced_retention_s",
          c.media.unreferenced_retention);
  seconds("media.sweep_interval_s", "sweep_interval_s", c.media.sweep_interval);
  positive("media.max_transfers", media["max_transfers"], c.media.max_transfers);
  if (auto v = typed<std::int64_t>(media["max_transfers_per_address"],
                                   "media.max_transfers_per_address")) {
    if (*v < 0) {
      throw std::runtime_error(
          "config: media.max_transfers_per_address must be 0 (no limit) or more");
    }
    c.media.max_transfers_per_address = static_cast<std::size_t>(*v);
  }
  if (auto v = typed<std::string>(media["store"], "media.store")) {
    if (*v != "local" && *v != "s3")
      throw std::runtime_error(R"(config: media.store must be "local" or "s3")");
    c.media.s3 = *v == "s3";
  }
  auto text = [&](const char* name, std::string& target) {
    if (auto v = typed<std::string>(media[name], std::string("media.") + name)) target = *v;
  };
  text("s3_endpoint", c.media.s3_endpoint);
  text("s3_bucket", c.media.s3_bucket);
  text("s3_region", c.media.s3_region);
  text("s3_access_key", c.media.s3_access_key);
  text("s3_secret_key", c.media.s3_secret_key);
  text("s3_ca_file", c.media.s3_ca_file);
  if (c.media.s3 && (c.media.s3_endpoint.empty() || c.media.s3_bucket.empty() ||
                     c.media.s3_access_key.empty() || c.media.s3_secret_key.empty())) {
    throw std::runtime_error(
        "config: media.store = \"s3\" needs s3_endpoint, s3_bucket, s3_access_key and "
        "s3_secret_key");
  }
  if (c.media.unreferenced_retention < c.media.upload_url_ttl) {
    // An upload may still be running until its URL expires: sweeping it earlier would delete
    // a blob a client is about to send.
    throw std::runtime_error(
        "config: media.unreferenced_retention_s must be at least media.upload_url_ttl_s");
  }
  if (c.media.s3 && c.media.unreferenced_retention < 2 * c.media.upload_url_ttl) {
    // A slot's part URLs expire a URL lifetime before its record may be swept
    // (RequestUploadParts): at less than twice the lifetime, a multipart upload could not be
    // resumed at all.
    throw std::runtime_error(
        "config: with media.store = \"s3\", media.unreferenced_retention_s must be at least "
        "twice media.upload_url_ttl_s");
  }

  auto conn = t["connections"];
  positive("connections.max_connections", conn["max_connections"], c.max_connections);
  positive("connections.max_unauthenticated", conn["max_unauthenticated"], c.max_unauthenticated);
  if (auto v = typed<std::int64_t>(conn["max_unauthenticated_per_address"],
                                   "connections.max_unauthenticated_per_address")) {
    if (*v < 0) {
      throw std::runtime_error(
          "config: connections.max_unauthenticated_per_address must be 0 (no limit) or more");
    }
    c.max_unauthenticated_per_address = static_cast<std::size_t>(*v);
  }
  if (const auto* list = conn["unlimited_addresses"].as_array()) {
    c.unlimited_addresses.clear();
    for (const auto& item : *list) {
      const auto* text = item.as_string();
      if (!text) {
        throw std::runtime_error(
            "config: connections.unlimited_addresses must be a list of strings (CIDR blocks)");
      }
      try {
        (void)parse_address_block(text->get());
      } catch (const std::invalid_argument& e) {
        throw std::runtime_error("config: connections.unlimited_addresses: " +
                                 std::string(e.what()));
      }
      c.unlimited_addresses.push_back(text->get());
    }
  } else if (conn["unlimited_addresses"]) {
    throw std::runtime_error(
        "config: connections.unlimited_addresses must be a list of strings (CIDR blocks)");
  }
  positive("connections.reserved_fds", conn["reserved_fds"], c.reserved_fds);
  positive("connections.memory_budget_bytes", conn["memory_budget_bytes"], c.memory_budget_bytes);
  auto storage = t["storage"];
  positive("storage.reserve_bytes", storage["reserve_bytes"], c.storage_reserve_bytes);
  positive("storage.dedupe_days", storage["dedupe_days"], c.dedupe_days);
  if (c.dedupe_days > max_duration_s / 86400)
    throw std::runtime_error("config: storage.dedupe_days must be at most 3650");
  positive("storage.max_pending_writes", storage["max_pending_writes"], c.max_pending_writes);
  positive("storage.memtable_budget_bytes", storage["memtable_budget_bytes"],
           c.memtable_budget_bytes);

  auto tls = t["tls"];
  if (auto v = typed<std::string>(tls["cert"], "tls.cert")) c.tls_cert = *v;
  if (auto v = typed<std::string>(tls["key"], "tls.key")) c.tls_key = *v;
  if (auto v = typed<bool>(tls["allow_plaintext"], "tls.allow_plaintext")) c.allow_plaintext = *v;

  // Rules between keys, on the values in force once the file is applied over `c`.
  if (c.limits.max_unauthenticated_frame_bytes > c.limits.max_frame_bytes) {
    throw std::runtime_error(
        "config: limits.max_unauthenticated_frame_bytes must not exceed max_frame_bytes");
  }
  if (c.storage_reserve_bytes < (4u << 20)) {
    throw std::runtime_error(
        "config: storage.reserve_bytes must be at least 4 MiB (the store's log is capped at a "
        "quarter of it)");
  }
  if (c.limits.max_payload_bytes + 1024 > c.limits.max_frame_bytes) {
    throw std::runtime_error(
        "config: limits.max_frame_bytes must exceed max_payload_bytes by 1 KiB");
  }
  // A pushed Envelope is its payload plus up to ~1 KiB of fields, and never more than a frame:
  // a queue of max_frame_bytes always holds one (the drain would otherwise wait forever for
  // room that never comes).
  if (c.max_outbound_bytes < c.limits.max_frame_bytes) {
    throw std::runtime_error(
        "config: limits.max_outbound_bytes (" + std::to_string(c.max_outbound_bytes) +
        ") must be at least limits.max_frame_bytes (" + std::to_string(c.limits.max_frame_bytes) +
        "): a connection's outgoing queue must hold one message of the largest size, whose "
        "payload is limits.max_payload_bytes");
  }
  // Nor may a response close its connection as a slow reader on an empty queue: the largest
  // the server sends, a History page (512 KiB of payload, its messages' other fields, at most
  // one group's member list), stays under the 1 MiB protocol.md tells clients to accept.
  if (c.max_outbound_bytes < min_outbound_bytes) {
    throw std::runtime_error("config: limits.max_outbound_bytes (" +
                             std::to_string(c.max_outbound_bytes) + ") must be at least " +
                             std::to_string(min_outbound_bytes) +
                             " (1 MiB): a connection's outgoing queue must hold one History page");
  }
  return c;
}

void check_backends(const config& c) {
  auto starts = [](const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; };
  if (!c.store_url.empty() && !starts(c.store_url, "postgresql://") &&
      !starts(c.store_url, "postgres://")) {
    throw std::invalid_argument("store must be a postgresql:// URI (or empty for the embedded "
                                "store), got '" + c.store_url + "'");
  }
  if (!c.presence_url.empty()) redis::parse_url(c.presence_url);  // throws invalid_argument
  if (!c.presence_url.empty() && c.store_url.empty()) {
    throw std::invalid_argument("presence in Redis needs a shared store (--store "
                                "postgresql://...): nodes route to each other over one chat log");
  }
}

void check_transport(const config& c) {
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    throw std::invalid_argument("TLS needs both a certificate and a key (--tls-cert, --tls-key)");
  }
  if (c.allow_plaintext) return;
  boost::system::error_code ec;
  // The blob server speaks TLS when the main port does (the same certificate); without it,
  // plain HTTP: off loopback only when allowed, as plain ws:// is.
  if (!c.media.s3 && c.tls_cert.empty()) {
    const std::string host = c.media.listen_host.empty() ? c.listen_host : c.media.listen_host;
    const auto media = boost::asio::ip::make_address(host, ec);
    if (ec || !media.is_loopback()) {
      throw std::invalid_argument(
          "refusing plain http:// for media on " + host +
          ", which is not a loopback address: give a certificate (--tls-cert FILE --tls-key "
          "FILE; the blob server uses it too), or put it on a loopback address behind a "
          "TLS-terminating proxy ([media] listen, public_url), or give --allow-plaintext");
    }
  }
  if (!c.tls_cert.empty()) return;
  const auto address = boost::asio::ip::make_address(c.listen_host, ec);
  if (!ec && address.is_loopback()) return;
  throw std::invalid_argument(
      "refusing plain ws:// on " + c.listen_host +
      ", which is not a loopback address: give a certificate (--tls-cert FILE --tls-key FILE) "
      "or, behind a TLS-terminating proxy, --allow-plaintext");
}

}  // namespace parley::server
