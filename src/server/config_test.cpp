#include "server/config.hpp"

#include <gtest/gtest.h>

#include <fstream>

namespace parley::server {
namespace {

std::filesystem::path write_temp(const std::string& name, const std::string& text) {
  auto p = std::filesystem::temp_directory_path() / ("parley_config_test_" + name + ".toml");
  std::ofstream(p) << text;
  return p;
}

// What loading `text` over `base` throws (std::runtime_error's message); "" if it loads.
std::string load_error(const std::string& name, const std::string& text, config base = {}) {
  try {
    load_config_file(write_temp(name, text), base);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(config, parse_listen) {
  config c;
  parse_listen("0.0.0.0:9000", c);
  EXPECT_EQ(c.listen_host, "0.0.0.0");
  EXPECT_EQ(c.listen_port, 9000);
  parse_listen("[::1]:0", c);
  EXPECT_EQ(c.listen_host, "::1");
  EXPECT_EQ(c.listen_port, 0);
  EXPECT_THROW(parse_listen("localhost", c), std::invalid_argument);
  EXPECT_THROW(parse_listen("127.0.0.1:70000", c), std::invalid_argument);
  EXPECT_THROW(parse_listen("127.0.0.1:80x", c), std::invalid_argument);
}

TEST(config, toml_file_overrides_defaults) {
  auto p = write_temp("ok", R"(
listen = "127.0.0.1:9100"
data = "/tmp/parley-data"
threads = 3
fsync = false
[limits]
max_payload_bytes = 1000
max_frame_bytes = 4096
max_outbound_frames = 10
auth_timeout_ms = 500
)");
  config c = load_config_file(p, config{});
  EXPECT_EQ(c.listen_port, 9100);
  EXPECT_EQ(c.data_dir, "/tmp/parley-data");
  EXPECT_EQ(c.threads, 3u);
  EXPECT_FALSE(c.fsync);
  EXPECT_EQ(c.limits.max_payload_bytes, 1000u);
  EXPECT_EQ(c.limits.max_frame_bytes, 4096u);
  EXPECT_EQ(c.max_outbound_frames, 10u);
  EXPECT_EQ(c.auth_timeout, std::chrono::milliseconds(500));
  EXPECT_EQ(c.max_in_flight, config{}.max_in_flight);  // untouched
}

TEST(config, bad_values_are_rejected_with_the_key_named) {
  auto wrong_type = write_temp("type", "threads = \"many\"\n");
  EXPECT_THROW(load_config_file(wrong_type, config{}), std::runtime_error);
  auto negative = write_temp("neg", "[limits]\nmax_payload_bytes = -1\n");
  try {
    load_config_file(negative, config{});
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("max_payload_bytes"), std::string::npos);
  }
  auto syntax = write_temp("syntax", "listen = \n");
  EXPECT_THROW(load_config_file(syntax, config{}), std::runtime_error);
  auto frame_too_small = write_temp("frame", "[limits]\nmax_frame_bytes = 1000\n");
  EXPECT_THROW(load_config_file(frame_too_small, config{}), std::runtime_error);
}

TEST(config, the_media_table_is_read_and_checked) {
  const auto p = write_temp("media", R"([media]
listen = "127.0.0.1:9001"
public_url = "https://media.example.org/"
quota_bytes = 0
upload_url_ttl_s = 60
download_url_ttl_s = 120
unreferenced_retention_s = 3600
sweep_interval_s = 30
max_transfers = 16
max_transfers_per_address = 4
store = "s3"
s3_endpoint = "http://127.0.0.1:9000"
s3_bucket = "files"
s3_region = "eu-west-1"
s3_access_key = "AK"
s3_secret_key = "SK"
s3_ca_file = "/etc/parley/s3-ca.pem"
[rate_limits]
media_per_device = 10
media_per_device_burst = 5
)");
  const auto c = load_config_file(p, config{});
  EXPECT_EQ(c.media.listen_host, "127.0.0.1");
  EXPECT_EQ(c.media.listen_port, 9001);
  EXPECT_TRUE(c.media.listen_set);
  EXPECT_EQ(c.media.public_url, "https://media.example.org") << "trailing slash dropped";
  EXPECT_EQ(c.media.quota_bytes, 0u);
  EXPECT_EQ(c.media.upload_url_ttl, std::chrono::seconds(60));
  EXPECT_EQ(c.media.download_url_ttl, std::chrono::seconds(120));
  EXPECT_EQ(c.media.unreferenced_retention, std::chrono::seconds(3600));
  EXPECT_EQ(c.media.sweep_interval, std::chrono::seconds(30));
  EXPECT_EQ(c.media.max_transfers, 16u);
  EXPECT_EQ(c.media.max_transfers_per_address, 4u);
  EXPECT_TRUE(c.media.s3);
  EXPECT_EQ(c.media.s3_endpoint, "http://127.0.0.1:9000");
  EXPECT_EQ(c.media.s3_bucket, "files");
  EXPECT_EQ(c.media.s3_region, "eu-west-1");
  EXPECT_EQ(c.media.s3_ca_file, "/etc/parley/s3-ca.pem");
  EXPECT_EQ(c.rates.media_per_device.per_minute, 10);
  EXPECT_EQ(c.rates.media_per_device.burst, 5);

  EXPECT_NE(load_error("media_store", "[media]\nstore = \"ftp\"\n").find("media.store"),
            std::string::npos);
  EXPECT_NE(load_error("media_s3", "[media]\nstore = \"s3\"\ns3_bucket = \"b\"\n")
                .find("s3_endpoint"),
            std::string::npos);
  EXPECT_NE(load_error("media_url", "[media]\npublic_url = \"ftp://x\"\n").find("public_url"),
            std::string::npos);
  EXPECT_NE(load_error("media_ttl",
                       "[media]\nupload_url_ttl_s = 600\nunreferenced_retention_s = 60\n")
                .find("unreferenced_retention_s"),
            std::string::npos);
  // With S3, unsent slots are kept at least twice a URL's lifetime (part URLs expire a lifetime
  // before the slot's record may be swept); the local store needs only one.
  const std::string s3 =
      "[media]\nstore = \"s3\"\ns3_endpoint = \"http://127.0.0.1:9000\"\ns3_bucket = \"b\"\n"
      "s3_access_key = \"k\"\ns3_secret_key = \"s\"\nupload_url_ttl_s = 600\n";
  EXPECT_NE(load_error("media_s3_retention", s3 + "unreferenced_retention_s = 1199\n")
                .find("at least twice media.upload_url_ttl_s"),
            std::string::npos);
  EXPECT_EQ(load_error("media_s3_retention_ok", s3 + "unreferenced_retention_s = 1200\n"), "");
  EXPECT_EQ(load_error("media_local_retention",
                       "[media]\nupload_url_ttl_s = 600\nunreferenced_retention_s = 600\n"),
            "");
  // A URL lives 7 days at most (S3's longest presigned URL): 604800 s loads, one more not.
  EXPECT_EQ(load_error("media_ttl_week",
                       "[media]\nupload_url_ttl_s = 604800\ndownload_url_ttl_s = 604800\n"
                       "unreferenced_retention_s = 604800\n"),
            "");
  EXPECT_NE(load_error("media_upload_ttl_long",
                       "[media]\nupload_url_ttl_s = 604801\nunreferenced_retention_s = 700000\n")
                .find("media.upload_url_ttl_s must be at most 604800"),
            std::string::npos);
  EXPECT_NE(load_error("media_download_ttl_long", "[media]\ndownload_url_ttl_s = 604801\n")
                .find("media.download_url_ttl_s must be at most 604800"),
            std::string::npos);
  EXPECT_NE(load_error("media_key", "[media]\nbucket = \"x\"\n").find("media.bucket"),
            std::string::npos);
}

TEST(config, a_plain_blob_server_stays_on_loopback_unless_plaintext_is_allowed) {
  config c;
  c.listen_host = "127.0.0.1";
  c.media.listen_host = "0.0.0.0";
  EXPECT_THROW(check_transport(c), std::invalid_argument) << "plain http:// off loopback";
  c.media.listen_host = "127.0.0.1";
  EXPECT_NO_THROW(check_transport(c));
  c.media.listen_host = "10.0.0.1";
  c.allow_plaintext = true;
  EXPECT_NO_THROW(check_transport(c));
  c.allow_plaintext = false;
  c.media.s3 = true;  // no blob server then
  EXPECT_NO_THROW(check_transport(c));
  // With a certificate the blob server speaks TLS too: any address.
  c.media.s3 = false;
  c.listen_host = "0.0.0.0";
  c.media.listen_host.clear();
  c.tls_cert = "cert.pem";
  c.tls_key = "key.pem";
  EXPECT_NO_THROW(check_transport(c));
}

TEST(config, a_file_with_every_known_key_loads) {
  auto p = write_temp("every_key", R"(
listen = "0.0.0.0:9200"
data = "/tmp/parley-every-key"
threads = 256
node_id = 1023
fsync = false
[limits]
max_frame_bytes = 131072
max_payload_bytes = 32768
max_in_flight = 16
max_outbound_frames = 128
max_outbound_bytes = 1048576
drain_page = 64
auth_timeout_ms = 2500
max_unauthenticated_frame_bytes = 2048
max_group_members = 512
group_receipts_ms = 250
[rate_limits]
register_per_address = 5
register_per_address_burst = 3
register_global = 100.5
register_global_burst = 50
bad_login_per_address = 0
bad_login_per_address_burst = 1
key_fetch_per_device = 30
key_fetch_per_device_burst = 10
one_time_prekey_per_pair = 0.5
one_time_prekey_per_pair_burst = 2
send_per_device = 1200
send_per_device_burst = 100
typing_per_device = 60
typing_per_device_burst = 5
group_read_per_device = 90
group_read_per_device_burst = 7
group_change_per_device = 12
group_change_per_device_burst = 4
media_per_device = 30
media_per_device_burst = 9
[connections]
max_connections = 1000
max_unauthenticated = 100
max_unauthenticated_per_address = 7
unlimited_addresses = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]
reserved_fds = 256
memory_budget_bytes = 67108864
[storage]
reserve_bytes = 8388608
dedupe_days = 3
max_pending_writes = 1000
memtable_budget_bytes = 33554432
)");
  config c = load_config_file(p, config{});
  EXPECT_EQ(c.limits.max_unauthenticated_frame_bytes, 2048u);
  EXPECT_EQ(c.rates.register_per_address.per_minute, 5);
  EXPECT_EQ(c.rates.register_per_address.burst, 3);
  EXPECT_EQ(c.rates.register_global.per_minute, 100.5);
  EXPECT_EQ(c.rates.bad_login_per_address.per_minute, 0);  // off
  EXPECT_EQ(c.rates.key_fetch_per_device.burst, 10);
  EXPECT_EQ(c.rates.one_time_prekey_per_pair.per_minute, 0.5);
  EXPECT_EQ(c.rates.one_time_prekey_per_pair.burst, 2);
  EXPECT_EQ(c.rates.send_per_device.per_minute, 1200);
  EXPECT_EQ(c.rates.typing_per_device.burst, 5);
  EXPECT_EQ(c.rates.group_read_per_device.per_minute, 90);
  EXPECT_EQ(c.rates.group_read_per_device.burst, 7);
  EXPECT_EQ(c.rates.group_change_per_device.per_minute, 12);
  EXPECT_EQ(c.rates.group_change_per_device.burst, 4);
  EXPECT_EQ(c.rates.media_per_device.per_minute, 30);
  EXPECT_EQ(c.rates.media_per_device.burst, 9);
  EXPECT_EQ(c.limits.max_group_members, 512u);
  EXPECT_EQ(c.group_receipts_interval, std::chrono::milliseconds(250));
  EXPECT_EQ(c.dedupe_days, 3u);
  EXPECT_EQ(c.max_pending_writes, 1000u);
  EXPECT_EQ(c.memtable_budget_bytes, 32u << 20);
  EXPECT_EQ(c.max_connections, 1000u);
  EXPECT_EQ(c.max_unauthenticated, 100u);
  EXPECT_EQ(c.max_unauthenticated_per_address, 7u);
  EXPECT_EQ(c.unlimited_addresses,
            (std::vector<std::string>{"10.0.0.0/8", "2001:db8::/32", "192.0.2.1"}));
  EXPECT_EQ(c.reserved_fds, 256u);
  EXPECT_EQ(c.memory_budget_bytes, 64u << 20);
  EXPECT_EQ(c.storage_reserve_bytes, 8u << 20);
  EXPECT_EQ(c.listen_host, "0.0.0.0");
  EXPECT_EQ(c.listen_port, 9200);
  EXPECT_EQ(c.data_dir, "/tmp/parley-every-key");
  EXPECT_EQ(c.threads, 256u);
  EXPECT_EQ(c.node_id, 1023u);
  EXPECT_FALSE(c.fsync);
  EXPECT_EQ(c.limits.max_frame_bytes, 131072u);
  EXPECT_EQ(c.limits.max_payload_bytes, 32768u);
  EXPECT_EQ(c.max_in_flight, 16u);
  EXPECT_EQ(c.max_outbound_frames, 128u);
  EXPECT_EQ(c.max_outbound_bytes, 1048576u);  // exactly the smallest allowed
  EXPECT_EQ(c.drain_page, 64u);
  EXPECT_EQ(c.auth_timeout, std::chrono::milliseconds(2500));
  // An empty file changes nothing.
  EXPECT_EQ(load_error("empty", ""), "");
}

TEST(config, the_per_address_limit_and_its_exempt_blocks_are_checked) {
  const config defaults;
  EXPECT_EQ(defaults.max_unauthenticated_per_address, 64u);
  EXPECT_EQ(defaults.unlimited_addresses, (std::vector<std::string>{"127.0.0.0/8", "::1"}))
      << "the machine itself (a local proxy, a benchmark) is not limited by default";
  auto c = load_config_file(write_temp("per_address_off",
                                       "[connections]\nmax_unauthenticated_per_address = 0\n"
                                       "unlimited_addresses = []\n"),
                            config{});
  EXPECT_EQ(c.max_unauthenticated_per_address, 0u) << "0: no limit";
  EXPECT_TRUE(c.unlimited_addresses.empty());
  EXPECT_NE(load_error("per_address_neg", "[connections]\nmax_unauthenticated_per_address = -1\n")
                .find("max_unauthenticated_per_address"),
            std::string::npos);
  EXPECT_EQ(defaults.media.max_transfers_per_address, 32u);
  EXPECT_NE(load_error("transfers_per_address_neg", "[media]\nmax_transfers_per_address = -1\n")
                .find("media.max_transfers_per_address"),
            std::string::npos);
  EXPECT_EQ(load_config_file(
                write_temp("transfers_per_address_off", "[media]\nmax_transfers_per_address = 0\n"),
                config{})
                .media.max_transfers_per_address,
            0u);
  for (const char* bad :
       {"unlimited_addresses = [\"10.0.0.1/8\"]\n", "unlimited_addresses = [\"localhost\"]\n",
        "unlimited_addresses = [8]\n", "unlimited_addresses = \"::1\"\n"}) {
    EXPECT_NE(load_error("unlimited_bad", std::string("[connections]\n") + bad)
                  .find("connections.unlimited_addresses"),
              std::string::npos)
        << bad;
  }
}

TEST(config, new_limits_are_checked) {
  EXPECT_NE(load_error("neg_rate", "[rate_limits]\nsend_per_device = -1\n").find("0 or more"),
            std::string::npos);
  EXPECT_NE(
      load_error("zero_burst", "[rate_limits]\nsend_per_device_burst = 0\n").find("at least 1"),
      std::string::npos);
  EXPECT_NE(load_error("tiny_reserve", "[storage]\nreserve_bytes = 1024\n").find("4 MiB"),
            std::string::npos);
  EXPECT_NE(load_error("preauth_over_frame",
                       "[limits]\nmax_unauthenticated_frame_bytes = "
                       "1000000\n")
                .find("max_unauthenticated_frame_bytes"),
            std::string::npos);
  EXPECT_NE(load_error("metrics_port", "metrics_listen = \"127.0.0.1:70000\"\n").find("port"),
            std::string::npos);
}

TEST(config, group_size_and_dedupe_window_have_upper_bounds) {
  EXPECT_EQ(load_error("members_1024", "[limits]\nmax_group_members = 1024\n"), "");
  EXPECT_NE(load_error("members_1025", "[limits]\nmax_group_members = 1025\n")
                .find("limits.max_group_members must be at most 1024"),
            std::string::npos);
  EXPECT_EQ(load_error("dedupe_3650", "[storage]\ndedupe_days = 3650\n"), "");
  EXPECT_NE(load_error("dedupe_3651", "[storage]\ndedupe_days = 3651\n")
                .find("storage.dedupe_days must be at most 3650"),
            std::string::npos);
}

// A duration is added to or taken from a clock's now(): ten years at most, so that neither can
// overflow (a retention of a hundred years once made the sweep's cut-off wrap round to "every
// blob", and deleted fresh uploads).
TEST(config, durations_have_an_upper_bound_of_ten_years) {
  EXPECT_EQ(load_error("retention_10y",
                       "[media]\nunreferenced_retention_s = 315360000\n"
                       "sweep_interval_s = 315360000\n"),
            "");
  EXPECT_NE(load_error("retention_100y", "[media]\nunreferenced_retention_s = 3153600000\n")
                .find("media.unreferenced_retention_s must be at most 315360000 (ten years)"),
            std::string::npos);
  EXPECT_NE(load_error("sweep_100y", "[media]\nsweep_interval_s = 3153600000\n")
                .find("media.sweep_interval_s must be at most 315360000"),
            std::string::npos);
  EXPECT_EQ(load_error("auth_10y", "[limits]\nauth_timeout_ms = 315360000000\n"), "");
  EXPECT_NE(load_error("auth_long", "[limits]\nauth_timeout_ms = 315360000001\n")
                .find("limits.auth_timeout_ms must be at most 315360000000"),
            std::string::npos);
  EXPECT_NE(load_error("receipts_long", "[limits]\ngroup_receipts_ms = 9223372036854775807\n")
                .find("limits.group_receipts_ms must be at most"),
            std::string::npos);
}

TEST(config, unknown_keys_and_tables_are_refused_with_the_key_named) {
  EXPECT_EQ(load_error("typo_in_table", "[limits]\nmax_frame_byte = 4096\n")
                .rfind("config: unknown key 'limits.max_frame_byte'", 0),
            0u);
  // The same key written as a dotted key at the top level.
  EXPECT_NE(load_error("typo_dotted", "limits.max_frame_byte = 4096\n")
                .find("unknown key 'limits.max_frame_byte'"),
            std::string::npos);
  // The message lists what the table takes.
  EXPECT_NE(load_error("typo_list", "[limits]\nmax_frame_byte = 4096\n").find("max_frame_bytes"),
            std::string::npos);
  EXPECT_NE(load_error("typo_top", "thread = 2\n").find("unknown key 'thread'"), std::string::npos);
  EXPECT_NE(load_error("unknown_table", "[no_such_table]\npath = \"/tmp\"\n")
                .find("unknown table [no_such_table]"),
            std::string::npos);
  EXPECT_NE(load_error("unknown_nested", "[limits.extra]\nx = 1\n").find("'limits.extra'"),
            std::string::npos);
  // A known table given as a value.
  EXPECT_NE(load_error("table_as_value", "limits = 5\n").find("limits must be a table"),
            std::string::npos);
  // After a valid key too: every key is checked, not only the first.
  EXPECT_NE(load_error("typo_after_valid",
                       "threads = 2\n[limits]\nmax_in_flight = 8\n"
                       "drain_pages = 10\n")
                .find("'limits.drain_pages'"),
            std::string::npos);
}

TEST(config, threads_in_the_file_must_be_1_to_256_as_the_flag) {
  EXPECT_NE(load_error("threads_huge", "threads = 100000\n").find("threads must be 1-256"),
            std::string::npos);
  EXPECT_NE(load_error("threads_257", "threads = 257\n").find("threads"), std::string::npos);
  EXPECT_NE(load_error("threads_zero", "threads = 0\n").find("threads"), std::string::npos);
  EXPECT_NE(load_error("threads_negative", "threads = -4\n").find("threads"), std::string::npos);
  EXPECT_EQ(load_config_file(write_temp("threads_1", "threads = 1\n"), config{}).threads, 1u);
  EXPECT_EQ(load_config_file(write_temp("threads_256", "threads = 256\n"), config{}).threads, 256u);
}

TEST(config, outbound_queue_must_hold_one_maximal_frame) {
  // Below the default max_payload_bytes (64 KiB).
  const std::string small = load_error("outbound_small", "[limits]\nmax_outbound_bytes = 1000\n");
  EXPECT_NE(small.find("limits.max_outbound_bytes"), std::string::npos) << small;
  EXPECT_NE(small.find("limits.max_frame_bytes"), std::string::npos) << small;
  // Only the payload limit raised in the file: the default queue (8 MiB) is now too small.
  const std::string raised = load_error(
      "payload_raised", "[limits]\nmax_payload_bytes = 16777216\nmax_frame_bytes = 16778240\n");
  EXPECT_NE(raised.find("limits.max_outbound_bytes"), std::string::npos) << raised;
  // The values in force count, wherever they came from: here the base.
  config base;
  base.max_outbound_bytes = 100;
  EXPECT_NE(load_error("outbound_base", "", base).find("max_outbound_bytes"), std::string::npos);
  // One maximal payload is not enough (its Envelope is larger); one frame is.
  EXPECT_NE(load_error("outbound_payload", "[limits]\nmax_outbound_bytes = 65536\n"), "");
  // Nor is one frame of the default size (256 KiB): a History page may be up to 512 KiB of
  // payload and its fields, and would close an idle connection as a slow reader.
  EXPECT_NE(load_error("outbound_frame", "[limits]\nmax_outbound_bytes = 262144\n")
                .find("must be at least 1048576 (1 MiB)"),
            std::string::npos);
  EXPECT_NE(load_error("outbound_below_mib", "[limits]\nmax_outbound_bytes = 1048575\n"), "");
  EXPECT_EQ(load_error("outbound_mib", "[limits]\nmax_outbound_bytes = 1048576\n"), "");
}

TEST(config, limits_of_the_wrong_type_are_refused) {
  EXPECT_NE(load_error("limit_type", "[limits]\nmax_in_flight = \"many\"\n")
                .find("limits.max_in_flight has the wrong type"),
            std::string::npos);
  EXPECT_NE(load_error("limit_float", "[limits]\nmax_outbound_bytes = 1e9\n")
                .find("limits.max_outbound_bytes"),
            std::string::npos);
}

}  // namespace
}  // namespace parley::server

namespace parley::server {
namespace {

TEST(config, the_cluster_backends_are_read_and_checked) {
  auto p = write_temp("cluster", R"(
node_id = 7
store = "postgresql://parley@db.internal:5432/parley"
presence = "redis://10.0.0.5:6379?cluster=1"
presence_ttl_s = 12
store_writers = 3
)");
  const config c = load_config_file(p, {});
  EXPECT_EQ(c.store_writers, 3u);
  EXPECT_EQ(c.node_id, 7u);
  EXPECT_EQ(c.store_url, "postgresql://parley@db.internal:5432/parley");
  EXPECT_EQ(c.presence_url, "redis://10.0.0.5:6379?cluster=1");
  EXPECT_EQ(c.presence_ttl, std::chrono::seconds(12));
  EXPECT_NO_THROW(check_backends(c));

  EXPECT_NE(load_error("ttl", "presence_ttl_s = 1\n").find("presence_ttl_s"), std::string::npos);
  EXPECT_NE(load_error("writers0", "store_writers = 0\n").find("store_writers"), std::string::npos);
  EXPECT_NE(load_error("writers17", "store_writers = 17\n").find("store_writers"),
            std::string::npos);
  config bad = c;
  bad.store_url = "mysql://x";
  EXPECT_THROW(check_backends(bad), std::invalid_argument);
  bad = c;
  bad.presence_url = "redis://host:99999";
  EXPECT_THROW(check_backends(bad), std::invalid_argument);
  bad = c;
  bad.presence_url = "memcached://host";
  EXPECT_THROW(check_backends(bad), std::invalid_argument);
  // Routing between nodes needs the chat log they share.
  bad = c;
  bad.store_url.clear();
  EXPECT_THROW(check_backends(bad), std::invalid_argument);
  // The embedded default, and one node on a shared store, are fine.
  EXPECT_NO_THROW(check_backends(config{}));
  bad = c;
  bad.presence_url.clear();
  EXPECT_NO_THROW(check_backends(bad));
}

}  // namespace
}  // namespace parley::server
