// parleyd's configuration: defaults, then an optional TOML file, then command-line flags.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "wire/limits.hpp"

namespace parley::server {

// A token bucket: `burst` requests at once, refilled at `per_minute`. per_minute = 0: no limit.
struct rate_limit {
  double per_minute = 0;
  double burst = 0;
};

// The rate limits (docs/operations.md, [rate_limits]). Registration and failed logins are
// counted per source address and, for registration, for the whole server too; the rest per
// authenticated device. A request over its limit gets Error{RATE_LIMITED, retry_after_ms}.
struct rate_limits {
  rate_limit register_per_address{10, 20};
  rate_limit register_global{600, 200};
  rate_limit bad_login_per_address{30, 10};  // failed Authenticates; at 0 tokens, all refused
  // FetchKeys: each takes a one-time prekey. The burst is a whole group's worth: the first
  // message to a group of 1,024 sets up a session with each member (security.md, "Groups").
  rate_limit key_fetch_per_device{60, 1'024};
  // One-time prekeys one device takes of one account (the pair's own bucket): 3 at once, then
  // 6 an hour. A fetch past it is still answered, with bundles without a one-time prekey, so
  // that one account cannot drain another's stock with the group-sized burst above.
  rate_limit one_time_prekey_per_pair{0.1, 3};
  // SendMessage: 100/s sustained. The burst is a group's worth too: a first message to a group
  // of 1,024 is 1,023 pairwise sender-key messages and the group message.
  rate_limit send_per_device{6'000, 1'024};
  rate_limit typing_per_device{120, 30};     // Typing
  // CreateGroup and UpdateGroup: each pushes an event to up to 1,024 members' devices.
  rate_limit group_change_per_device{60, 30};
  // GetGroup, and GetStatus with detail: the reads whose answer holds up to 1,024 members'
  // names. The reference client asks GetGroup before each group send, so this is also its
  // group sends' pace (10/s sustained, 120 at once): far above a person's.
  rate_limit group_read_per_device{600, 120};
  // RequestUpload, RequestUploadParts and RequestDownload together: each signs URLs (and an
  // upload records a blob that counts against the quota until it is swept).
  rate_limit media_per_device{120, 60};
};

// [media]: files (docs/operations.md, "Media"). The embedded blob store keeps them under
// <data>/media and serves them on an address of its own (HTTP, over TLS when [tls] has a
// certificate; URLs signed with a key kept there); clients reach it at public_url.
struct media_config {
  std::string listen_host;      // empty: the main address's host
  std::uint16_t listen_port = 0;  // 0 with an empty host: the main port + 1 (0 if that is 0)
  bool listen_set = false;        // listen was given (then port 0 means any free port)
  std::string public_url;       // empty: http(s)://HOST:PORT of the bound address
  std::uint64_t quota_bytes = 2ull << 30;  // per account; 0: none
  std::chrono::seconds upload_url_ttl{900};
  std::chrono::seconds download_url_ttl{900};
  // An uploaded blob that no message references is deleted this long after its slot was
  // granted (an upload abandoned, or a file never sent); partial uploads likewise.
  std::chrono::seconds unreferenced_retention{24 * 3600};
  std::chrono::seconds sweep_interval{600};
  std::size_t max_transfers = 256;  // concurrent connections to the blob server
  // Of those, at most this many from one source address (as
  // [connections] max_unauthenticated_per_address, with the same unlimited_addresses); 0: no
  // such limit.
  std::size_t max_transfers_per_address = 32;
  // store = "s3": an S3-compatible object store instead (media/s3/s3_blob_store); clients
  // then upload and download there directly, and the blob server is not started.
  bool s3 = false;
  std::string s3_endpoint;  // "http://HOST:PORT"
  std::string s3_bucket;
  std::string s3_region = "us-east-1";
  std::string s3_access_key;
  std::string s3_secret_key;
  std::string s3_ca_file;  // https:// endpoints: trusted by parleyd's DELETEs; empty: the system's
};

struct config {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8080;  // 0: any free port (printed on start)
  std::filesystem::path data_dir = "./data";
  unsigned threads = 0;  // 0: one per core
  std::uint64_t node_id = 0;
  bool fsync = true;
  // The cluster kind (docs/scaling.md): `store` a postgresql:// URI (or libpq conninfo) of
  // the shared store instead of RocksDB under data_dir; `presence` a redis:// URI of the
  // presence map and the node bus instead of this process. Empty: the embedded backends.
  std::string store_url;
  std::string presence_url;
  // How long a device's routing entry and a node's presence announcement live in Redis
  // without a refresh (every third of it): how long a dead node's users look connected.
  std::chrono::seconds presence_ttl{30};
  // The PostgreSQL store's writer connections (1-16): one device's writes always go to the
  // same one; more let a node's groups commit side by side (docs/scaling.md).
  std::size_t store_writers = 1;

  wire::limits limits;
  std::size_t max_in_flight = 256;         // requests awaiting a response, per connection
  std::size_t max_outbound_frames = 4096;  // bounded outgoing queue, per connection
  std::size_t max_outbound_bytes = 8 * 1024 * 1024;
  std::size_t drain_page = 256;     // chat-log entries read per page by the drain
  std::size_t max_bad_frames = 16;  // consecutive bad frames before closing
  std::chrono::milliseconds auth_timeout{10'000};
  // A group's merged receipts are pushed at most this often (server/group_receipts.hpp).
  std::chrono::milliseconds group_receipts_interval{100};

  rate_limits rates;
  media_config media;

  // [connections]. 0: derived at start from the open-file limit (RLIMIT_NOFILE, raised to
  // its hard limit), less `reserved_fds` for the store and the process; accepts beyond it are
  // closed at once. Connections not authenticated yet (HTTP keep-alive, WebSocket before
  // Authenticate) count against the smaller `max_unauthenticated` too.
  std::size_t max_connections = 0;
  std::size_t max_unauthenticated = 0;  // 0: a quarter of max_connections
  // Of those, at most this many from one source address (an IPv6 /64 counts as one), so that
  // one host cannot fill max_unauthenticated and lock everybody else out; 0: no such limit.
  // Sources in `unlimited_addresses` (CIDR blocks, checked at load) are not counted: a proxy
  // in front of parleyd, whose clients all share its address, and the machine itself.
  std::size_t max_unauthenticated_per_address = 64;
  std::vector<std::string> unlimited_addresses{"127.0.0.0/8", "::1"};
  std::size_t reserved_fds = 512;
  // Every connection's buffered bytes together (partial frames, outgoing queues, unwritten
  // batches): past this, the connections holding the most are dropped until the total is
  // under 90 % of it.
  std::size_t memory_budget_bytes = 1024ull << 20;

  // [storage]: free space kept on the data directory's file system; writes are refused
  // below it (STORAGE_UNAVAILABLE) and resume by themselves above it.
  std::uint64_t storage_reserve_bytes = 256ull << 20;
  // How long a retried send is recognised by its client_msg_id (days).
  std::uint64_t dedupe_days = 7;
  // Write requests that may wait for the store's writer; beyond it, BUSY.
  std::size_t max_pending_writes = 65'536;
  // All of the store's memtables together.
  std::size_t memtable_budget_bytes = 64u << 20;

  // [tls]: with a certificate and key (PEM), the main address speaks TLS only (wss://,
  // https://), and so does the blob server; SIGHUP reloads them. Without, they speak plain
  // ws:// and http:// — allowed only on a loopback address unless `allow_plaintext` (e.g.
  // behind a TLS-terminating proxy).
  std::filesystem::path tls_cert;
  std::filesystem::path tls_key;
  bool allow_plaintext = false;

  // An address of its own for GET /metrics and /healthz (e.g. 127.0.0.1:9090); when set, the
  // main address no longer serves /metrics.
  std::string metrics_host;
  std::uint16_t metrics_port = 0;
};

// Reads a TOML file over `base`. Throws std::runtime_error naming the key on a bad value, an
// unknown key or table, or values that contradict each other. Keys (docs/operations.md):
// listen = "HOST:PORT", data = "DIR", threads, node_id, fsync, metrics_listen = "HOST:PORT",
// store = "postgresql://...", presence = "redis://...";
// [limits] max_frame_bytes, max_payload_bytes, max_in_flight, max_outbound_frames,
// max_outbound_bytes, drain_page, auth_timeout_ms, max_unauthenticated_frame_bytes,
// max_group_members, group_receipts_ms;
// [rate_limits] NAME and NAME_burst for each rate_limits member; [connections]
// max_connections, max_unauthenticated, reserved_fds, memory_budget_bytes; [storage]
// reserve_bytes, dedupe_days, max_pending_writes, memtable_budget_bytes; [tls] cert, key,
// allow_plaintext; [media] listen, public_url, quota_bytes, upload_url_ttl_s,
// download_url_ttl_s, unreferenced_retention_s, sweep_interval_s, max_transfers, store
// ("local" or "s3"), s3_endpoint, s3_bucket, s3_region, s3_access_key, s3_secret_key.
config load_config_file(const std::filesystem::path& file, config base);

// "HOST:PORT" -> host, port. Throws std::invalid_argument.
void parse_listen(const std::string& text, config& out);
// Refuses (std::invalid_argument) a store or presence URL of another scheme, and a Redis
// presence without a shared store (nodes that do not share the chat log cannot route to
// each other).
void check_backends(const config& c);
// Refuses (std::invalid_argument) a certificate without a key or the reverse, and plain ws://
// or a plain-HTTP blob server (no certificate: the blob server uses the main port's) on an
// address that is not a loopback one unless allow_plaintext is set.
void check_transport(const config& c);

// The same for the metrics address (metrics_host, metrics_port).
void parse_metrics_listen(const std::string& text, config& out);
// The same for the blob server's address (media.listen_host, media.listen_port).
void parse_media_listen(const std::string& text, config& out);

}  // namespace parley::server
