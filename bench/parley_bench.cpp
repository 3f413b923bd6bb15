// parley-bench: the load generator. Starts its own parleyd (fresh data directory, fsync on)
// and the raw echo baseline, drives them with open-loop load from several worker processes,
// and reports a table, a JSON file and a plot. See docs/performance.md.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/ws_connection.hpp"
#include "postgres_test_server.hpp"
#include "redis_server.hpp"
#include "report.hpp"
#include "scenarios.hpp"
#include "spawned_server.hpp"
#include "wire/frame_codec.hpp"

namespace {

namespace fs = std::filesystem;
using namespace parley::bench;

constexpr const char* usage =
    "usage: parley-bench [--quick | --smoke] [--procs N] [--server-threads N] [--out DIR]\n"
    "                    [--connections N] [--users N] [--rates R1,R2,...] [--step-secs S]\n"
    "                    [--drain-messages N] [--no-fsync] [--server URL --server-pid PID]\n"
    "                    [--server-metrics HOST:PORT] [--group-size N]\n"
    "                    [--group-rates R1,R2,...] [--grace-secs S] [--media-bytes N]\n"
    "                    [--media-small-bytes N] [--media-uploads N] [--media-rate R]\n"
    "                    [--media-s3 http://HOST:PORT/BUCKET] [--nodes N1,N2,...]\n"
    "                    [SCENARIO...]\n"
    "scenarios: baseline connect one-to-one logins-after-load drain fanout media cluster\n"
    "           (default: all eight)\n"
    "  logins-after-load  the one-to-one users' logins/s on the fresh server and again after\n"
    "            the one-to-one load (runs that load, and reports it, even if not asked for),\n"
    "            each login presenting the receipts stamp its device kept (none at the first)\n"
    "  fanout    one group of --group-size members (2-1,024), all online, acking what they\n"
    "            get; one member sends to it at each of --group-rates group messages/s (steps of\n"
    "            --step-secs): the time until the last member has each message, deliveries/s,\n"
    "            losses (a member without a message at the end of its step + --grace-secs)\n"
    "  media     files through parleyd's blob store on loopback: one file of --media-bytes\n"
    "            (100,000,000) encrypted, uploaded and downloaded alone (MB/s, parleyd's RSS\n"
    "            growth); --media-uploads (20) uploads of --media-small-bytes (10,000,000) at\n"
    "            once; one-to-one at --media-rate msg/s (1,000) for --step-secs without\n"
    "            transfers, then again with uploads and downloads running in a loop (p99 ratio)\n"
    "  --media-s3  also the big file through a parleyd whose blob store is this S3-compatible\n"
    "            one (bucket already there; keys from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,\n"
    "            AWS_REGION, else s3rver's S3RVER / S3RVER / us-east-1)\n"
    "  cluster   for each of --nodes node counts (1,2,4): PostgreSQL, Redis and that many\n"
    "            parleyd nodes (--store, --presence) on this machine; connect (--connections\n"
    "            per node), one-to-one and fanout with connections spread evenly over the\n"
    "            nodes; the store's commits and rows written per second (pg_stat_database);\n"
    "            after the one-to-one steps every user logs in again (timed) and one more\n"
    "            step runs at the last rate on those connections, with the nodes' first-push\n"
    "            checks counted (parley_first_push_checks_total)\n"
    "  --quick   small sizes, a few seconds per step (what `make bench` runs)\n"
    "  --smoke   tiny sizes, ~1.5 min in all; exits 1 if anything was lost (run by `make test`)\n"
    "  --server  use a parleyd started elsewhere (its pid for the CPU/RSS samples) instead of\n"
    "            starting a fresh one per scenario; the baseline still starts its echo server\n"
    "  --server-metrics  where that parleyd serves GET /metrics, if not on the --server address\n"
    "            (the store's commit latencies per step come from there)\n"
    "  defaults (full): 19,000 connections; 1,000 users at 1k,2.5k,3.5k,4.5k,5k,7.5k,10k,20k,\n"
    "  50k,100k msg/s, 60 s each; 10,000 queued messages; a group of 1,024 at 10,50,100,200,\n"
    "  400 group msg/s, 60 s each, 5 s grace; media as above; results in bench/results/\n";

constexpr double full_step_seconds = 60;
// The echo baseline has no store to wait for: it runs at most this long.
constexpr double baseline_seconds = 20;

struct options {
  std::string mode = "full";
  int procs = 4;
  unsigned server_threads = 2;
  fs::path out = "bench/results";
  std::size_t connections = 19'000;
  std::size_t users = 1'000;
  // The issue's steps, plus finer ones around this machine's knee (3.5-5k msg/s): with the
  // issue's steps alone, a knee between two of them reads as the lower one.
  std::vector<double> rates = {1'000, 2'500,  3'500,  4'500,  5'000,
                               7'500, 10'000, 20'000, 50'000, 100'000};
  // A sustainable rate must be sustained: steps long enough that the store's memtable flushes
  // and compactions happen inside them and count in their latencies.
  double step_seconds = full_step_seconds;
  std::size_t drain_messages = 10'000;
  // fanout: the group (the sender included; the protocol allows 1,024), its steps in group
  // messages per second (each one delivery per other member), and how long after the end of
  // its step a message may still reach a member before it counts as lost.
  std::size_t group_size = 1'024;
  std::vector<double> group_rates = {10, 50, 100, 200, 400};
  double grace_seconds = 5;
  // media: the file uploaded and downloaded alone and the file of each concurrent upload
  // (plaintext bytes), how many of those at once, the one-to-one rate of its two steps, and an
  // S3-compatible store to measure the big file through too (http://HOST:PORT/BUCKET).
  std::uint64_t media_bytes = 100'000'000;
  std::uint64_t media_small_bytes = 10'000'000;
  std::size_t media_uploads = 20;
  double media_rate = 1'000;
  std::string media_s3;
  // cluster: the node counts to measure, one after another.
  std::vector<int> cluster_nodes = {1, 2, 4};
  std::vector<std::string> scenarios;
  bool fsync = true;       // --no-fsync: diagnosis only (how much of a figure is the disk)
  std::string server_url;  // --server: drive a parleyd started elsewhere (e.g. under a profiler)
  pid_t server_pid = -1;   // --server-pid: its pid, for the /proc samples
  std::string server_metrics;  // --server-metrics: its metrics address, if not the --server one
};

std::vector<double> parse_rates(const std::string& s) {
  std::vector<double> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stod(item));
  return out;
}

options parse(int argc, char** argv) {
  options o;
  std::vector<std::string> args(argv + 1, argv + argc);
  // Modes first, so that explicit sizes override them.
  for (const auto& a : args) {
    if (a == "--quick") {
      o.mode = "quick";
      o.procs = 2;
      o.connections = 4'000;
      o.users = 500;
      o.rates = {1'000, 2'500, 5'000, 7'500, 10'000, 20'000};
      o.step_seconds = 4;
      o.group_rates = {10, 100, 400};  // the full group: its size is what the scenario is about
    } else if (a == "--smoke") {
      o.mode = "smoke";
      o.procs = 2;
      o.connections = 300;
      o.users = 40;
      o.rates = {200, 1'000};
      o.step_seconds = 1.5;
      o.drain_messages = 1'000;
      o.group_size = 32;
      o.group_rates = {10, 50};
      o.grace_seconds = 2;
      o.media_bytes = 2'000'000;
      o.media_small_bytes = 1'000'000;
      o.media_uploads = 3;
      o.media_rate = 200;
      o.cluster_nodes = {1, 2};
      o.out = fs::temp_directory_path() / "parley-bench-smoke";
    }
  }
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw std::invalid_argument(a + " needs a value");
      return args[++i];
    };
    if (a == "--quick" || a == "--smoke") continue;
    if (a == "--procs")
      o.procs = std::stoi(value());
    else if (a == "--server-threads")
      o.server_threads = static_cast<unsigned>(std::stoul(value()));
    else if (a == "--out")
      o.out = value();
    else if (a == "--connections")
      o.connections = std::stoul(value());
    else if (a == "--users")
      o.users = std::stoul(value());
    else if (a == "--rates")
      o.rates = parse_rates(value());
    else if (a == "--step-secs")
      o.step_seconds = std::stod(value());
    else if (a == "--drain-messages")
      o.drain_messages = std::stoul(value());
    else if (a == "--no-fsync")
      o.fsync = false;
    else if (a == "--server")
      o.server_url = value();
    else if (a == "--server-pid")
      o.server_pid = std::stoi(value());
    else if (a == "--server-metrics")
      o.server_metrics = value();
    else if (a == "--group-size")
      o.group_size = std::stoul(value());
    else if (a == "--group-rates")
      o.group_rates = parse_rates(value());
    else if (a == "--grace-secs")
      o.grace_seconds = std::stod(value());
    else if (a == "--media-bytes")
      o.media_bytes = std::stoull(value());
    else if (a == "--media-small-bytes")
      o.media_small_bytes = std::stoull(value());
    else if (a == "--media-uploads")
      o.media_uploads = std::stoul(value());
    else if (a == "--media-rate")
      o.media_rate = std::stod(value());
    else if (a == "--media-s3")
      o.media_s3 = value();
    else if (a == "--nodes") {
      o.cluster_nodes.clear();
      for (double n : parse_rates(value())) o.cluster_nodes.push_back(static_cast<int>(n));
    }
    else if (a == "--help" || a == "-h")
      throw std::invalid_argument("");
    else if (a == "baseline" || a == "connect" || a == "one-to-one" || a == "logins-after-load" ||
             a == "drain" || a == "fanout" || a == "media" || a == "cluster")
      o.scenarios.push_back(a);
    else
      throw std::invalid_argument("unknown argument " + a);
  }
  if (o.scenarios.empty())
    o.scenarios = {"baseline", "connect", "one-to-one", "logins-after-load",
                   "drain",    "fanout",  "media",      "cluster"};
  if (o.procs < 1 || o.procs > 64) throw std::invalid_argument("--procs must be 1-64");
  if (o.users < 2) throw std::invalid_argument("--users must be at least 2");
  // The protocol's limit (CreateGroup: GROUP_FULL past 1,024 members, the creator included).
  if (o.group_size < 2 || o.group_size > 1'024)
    throw std::invalid_argument("--group-size must be 2-1,024");
  if (o.rates.empty()) throw std::invalid_argument("--rates needs a rate");
  if (o.group_rates.empty()) throw std::invalid_argument("--group-rates needs a rate");
  if (o.grace_seconds < 0) throw std::invalid_argument("--grace-secs must not be negative");
  // media::max_media_plain_bytes: the largest file a client may send.
  if (o.media_bytes < 1 || o.media_bytes > 100'000'000 || o.media_small_bytes < 1 ||
      o.media_small_bytes > 100'000'000)
    throw std::invalid_argument("--media-bytes and --media-small-bytes must be 1-100,000,000");
  // The blob server takes 256 connections at a time ([media] max_transfers).
  if (o.media_uploads < 1 || o.media_uploads > 200)
    throw std::invalid_argument("--media-uploads must be 1-200");
  if (!(o.media_rate > 0)) throw std::invalid_argument("--media-rate must be positive");
  for (int n : o.cluster_nodes) {
    if (n < 1 || n > 16) throw std::invalid_argument("--nodes takes node counts of 1-16");
  }
  if (o.cluster_nodes.empty()) throw std::invalid_argument("--nodes needs a node count");
  if (!o.media_s3.empty()) {
    // One '/' after the host: the bucket's, and a bucket after it.
    const auto slash = o.media_s3.find('/', 7);
    if (o.media_s3.rfind("http://", 0) != 0 || slash == std::string::npos || slash == 7 ||
        slash + 1 == o.media_s3.size() || o.media_s3.find('/', slash + 1) != std::string::npos)
      throw std::invalid_argument("--media-s3 must be http://HOST:PORT/BUCKET");
  }
  return o;
}

bool wants(const options& o, const std::string& s) {
  for (const auto& x : o.scenarios) {
    if (x == s) return true;
  }
  return false;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The server binaries sit next to this one in build/bin/.
fs::path sibling(const char* name) { return fs::canonical("/proc/self/exe").parent_path() / name; }

struct parleyd_target {
  std::unique_ptr<spawned_server> owned;
  target t;
};

// A fresh parleyd with fsync on, as users run it, or the one given with --server.
parleyd_target parleyd_for(const options& o, const fs::path& data);

// The abuse limits are off for the load: a few source addresses register thousands of users
// and each sends as fast as the scenario asks; so is the media quota (the media scenario
// uploads gigabytes from one account). Everything else is as users run it. [media] comes last:
// start_parleyd appends more of its keys.
constexpr const char* bench_config = R"([rate_limits]
register_per_address = 0
register_global = 0
bad_login_per_address = 0
key_fetch_per_device = 0
send_per_device = 0
typing_per_device = 0
group_change_per_device = 0
group_read_per_device = 0
media_per_device = 0

[media]
quota_bytes = 0
)";

// A TOML basic string.
std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

// The [media] keys of a parleyd whose blob store is the S3-compatible one at `endpoint_bucket`
// (http://HOST:PORT/BUCKET, checked by parse()), with the keys of the environment's
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION, or else s3rver's.
std::string s3_media_config(const std::string& endpoint_bucket) {
  const auto slash = endpoint_bucket.rfind('/');
  auto env = [](const char* name, const char* otherwise) {
    const char* v = std::getenv(name);
    return std::string(v && *v ? v : otherwise);
  };
  return "store = \"s3\"\ns3_endpoint = " + toml_string(endpoint_bucket.substr(0, slash)) +
         "\ns3_bucket = " + toml_string(endpoint_bucket.substr(slash + 1)) +
         "\ns3_region = " + toml_string(env("AWS_REGION", "us-east-1")) +
         "\ns3_access_key = " + toml_string(env("AWS_ACCESS_KEY_ID", "S3RVER")) +
         "\ns3_secret_key = " + toml_string(env("AWS_SECRET_ACCESS_KEY", "S3RVER")) + "\n";
}

// A fresh parleyd with fsync on, as users run it (rate limits aside); `media_config`: more
// keys of its [media] table.
std::unique_ptr<spawned_server> start_parleyd(const options& o, const fs::path& data,
                                              const std::string& media_config = {}) {
  fs::remove_all(data);
  fs::create_directories(data);
  const fs::path config = data / "bench.toml";
  std::ofstream(config) << bench_config << media_config;
  std::vector<std::string> argv{sibling("parleyd").string(),
                                "--listen",
                                "127.0.0.1:0",
                                "--data",
                                (data / "server").string(),
                                "--config",
                                config.string(),
                                "--threads",
                                std::to_string(o.server_threads),
                                "--log-level",
                                "warn"};
  if (!o.fsync) argv.push_back("--no-fsync");
  return std::make_unique<spawned_server>(std::move(argv));
}

// Where a server given by its WebSocket URL serves GET /metrics when it has no metrics address
// of its own: the same HOST:PORT. Empty for a URL that does not parse.
std::string metrics_address_of(const std::string& url) {
  std::string host, port, path;
  bool tls = false;
  if (!parley::client::parse_ws_url(url, host, port, path, tls)) return {};
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + port;
}

parleyd_target parleyd_for(const options& o, const fs::path& data) {
  if (!o.server_url.empty()) {
    const auto metrics =
        o.server_metrics.empty() ? metrics_address_of(o.server_url) : o.server_metrics;
    return {nullptr, {o.server_url, o.server_pid, o.procs, metrics, {}}};
  }
  // Started without --metrics-listen: /metrics is served on the listen address.
  auto server = start_parleyd(o, data);
  target t{server->url(), server->pid(), o.procs, "127.0.0.1:" + std::to_string(server->port()),
           {}};
  return {std::move(server), t};
}

// PostgreSQL's own count of the work done on the store's database: transactions committed,
// and rows inserted, updated or deleted (the statistics are flushed within a second or so).
std::pair<double, double> store_counters(const std::string& conninfo) {
  const std::string cmd = "psql '" + conninfo +
                          " dbname=postgres' -Atc \"SELECT xact_commit, tup_inserted + "
                          "tup_updated + tup_deleted FROM pg_stat_database WHERE datname = "
                          "'postgres'\" 2>/dev/null";
  std::pair<double, double> out{0, 0};
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char line[256] = {};
    if (std::fgets(line, sizeof line, p) != nullptr) std::sscanf(line, "%lf|%lf", &out.first, &out.second);
    ::pclose(p);
  }
  return out;
}

// One point of the cluster scenario: PostgreSQL (durable unless --no-fsync), Redis and `nodes`
// parleyd nodes, started here and stopped at the end.
cluster_point run_cluster(const options& o, const fs::path& data, int nodes) {
  fs::remove_all(data);
  fs::create_directories(data);
  const std::string script = std::string(PARLEY_SOURCE_DIR) + "/tests/support/postgres_server";
  const std::string pg_dir = "/tmp/parley-bench-pg-" + data.filename().string() + "-" +
                             std::to_string(::getpid());
  const std::string durable = o.fsync ? "PARLEY_PG_DURABLE=1 " : "";
  if (std::system((durable + script + " start " + pg_dir + " >/dev/null").c_str()) != 0)
    throw std::runtime_error("cluster: PostgreSQL did not start (" + script + ")");
  struct pg_guard {
    std::string stop;
    ~pg_guard() { [[maybe_unused]] int rc = std::system(stop.c_str()); }
  } pg{script + " stop " + pg_dir + " >/dev/null 2>&1"};
  std::string conninfo;
  {
    std::ifstream in(pg_dir + "/conninfo");
    std::getline(in, conninfo);
  }
  const std::string store = "postgresql://postgres@127.0.0.1:" +
                            parley::test_support::conninfo_field(conninfo, "port") + "/postgres";
  parley::test_support::redis_server redis;

  const fs::path config = data / "bench.toml";
  std::ofstream(config) << bench_config;
  std::vector<std::unique_ptr<spawned_server>> servers;
  for (int i = 1; i <= nodes; ++i) {
    std::vector<std::string> argv{sibling("parleyd").string(),
                                  "--listen", "127.0.0.1:0",
                                  "--data", (data / ("node-" + std::to_string(i))).string(),
                                  "--config", config.string(),
                                  "--threads", std::to_string(o.server_threads),
                                  "--log-level", "warn",
                                  "--node-id", std::to_string(i),
                                  "--store", store,
                                  "--presence", redis.url()};
    if (!o.fsync) argv.push_back("--no-fsync");
    servers.push_back(std::make_unique<spawned_server>(std::move(argv)));
  }
  target t;
  for (const auto& s : servers) t.url += (t.url.empty() ? "" : " ") + s->url();
  t.pid = servers.front()->pid();
  for (std::size_t i = 1; i < servers.size(); ++i) t.more_pids.push_back(servers[i]->pid());
  t.procs = o.procs;
  t.metrics_address = "127.0.0.1:" + std::to_string(servers.front()->port());

  cluster_point p;
  p.nodes = nodes;
  {
    target c = t;
    // A worker process holds its share of the connections under the 20,000 open files.
    const std::size_t total = o.connections * static_cast<std::size_t>(nodes);
    c.procs = std::max<int>(o.procs, static_cast<int>((total + 17'999) / 18'000));
    p.connect = run_connect(c, total, 3.0);
  }
  // The first-push checks and the gaps, each summed over every node (one GET /metrics per
  // node); none if a node's cannot be read.
  struct push_counters {
    std::uint64_t checks = 0, gaps = 0;
  };
  auto nodes_total = [&]() -> std::optional<push_counters> {
    push_counters sum;
    for (const auto& s : servers) {
      const auto body = get_metrics("127.0.0.1:" + std::to_string(s->port()));
      if (!body) return std::nullopt;
      const auto checks = metric_value(*body, "parley_first_push_checks_total");
      const auto gaps = metric_value(*body, "parley_push_gaps_total");
      if (!checks || !gaps) return std::nullopt;
      sum.checks += *checks;
      sum.gaps += *gaps;
    }
    return sum;
  };
  auto window = [](std::uint64_t received, const std::optional<push_counters>& from,
                   const std::optional<push_counters>& to) {
    push_counts w{received, {}, {}};
    if (from && to) {
      w.checks = to->checks - from->checks;
      w.gaps = to->gaps - from->gaps;
    }
    return w;
  };
  // The one-to-one steps; then every user reconnects (the logins after the load, on the
  // shared store) and one more step runs at the last rate on the new connections, whose
  // chats are all older than they are: there a cluster node checks each chat's first push.
  const auto pushes_before = nodes_total();
  const auto before = store_counters(conninfo);
  std::pair<double, double> after{};
  std::optional<push_counters> pushes_after;
  auto at_end_of_steps = [&](std::size_t k) {
    if (k != o.rates.size() + 1) return;  // the steps and their stragglers are over
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // statistics flushed
    after = store_counters(conninfo);
    pushes_after = nodes_total();
  };
  p.one_to_one =
      run_one_to_one(t, o.users, o.rates, o.step_seconds,
                     relogin_options{.rounds = 1, .rate_after = o.rates.back()}, at_end_of_steps);
  const auto pushes_end = nodes_total();
  std::uint64_t received = 0;
  for (const auto& s : p.one_to_one->steps) received += s.received;
  p.steps_pushes = window(received, pushes_before, pushes_after);
  if (p.one_to_one->after_relogin) {
    p.after_relogin_pushes =
        window(p.one_to_one->after_relogin->received, pushes_after, pushes_end);
  }
  for (const auto& s : p.one_to_one->steps) p.store_seconds += s.seconds;
  if (p.store_seconds > 0) {
    p.store_commits_per_second = (after.first - before.first) / p.store_seconds;
    p.store_rows_per_second = (after.second - before.second) / p.store_seconds;
  }
  p.fanout = run_fanout(t, o.group_size, o.group_rates, o.step_seconds, o.grace_seconds);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  parley::wire::silence_protobuf_logging();
  options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& e) {
    if (std::string(e.what()).empty()) {
      std::fputs(usage, stdout);
      return 0;
    }
    std::cerr << "parley-bench: " << e.what() << '\n' << usage;
    return 2;
  }
  if (o.mode == "full" && o.step_seconds < full_step_seconds &&
      (wants(o, "one-to-one") || wants(o, "logins-after-load") || wants(o, "fanout") ||
       wants(o, "media"))) {
    std::cerr << "parley-bench: steps of " << o.step_seconds << " s are shorter than the "
              << full_step_seconds
              << " s in which a rate counts as sustained (store flushes and compactions inside "
                 "the steps)\n";
  }
  // The hard limit on open files (20,000 here) cannot be raised, but the soft one can: the
  // servers started below inherit it.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }

  run_report report;
  report.started_at = utc_now();
  report.mode = o.mode;
  report.procs = o.procs;
  report.server_threads = o.server_threads;
  report.fsync = o.fsync;
  std::random_device rd;
  const fs::path data = fs::temp_directory_path() / ("parley-bench-" + std::to_string(rd()));
  bool ok = true;
  try {
    if (wants(o, "baseline")) {
      std::cerr << "parley-bench: baseline (echo)...\n";
      spawned_server echo({sibling("parley-bench-echo").string(), "--listen", "127.0.0.1:0",
                           "--threads", std::to_string(o.server_threads)});
      const std::size_t conns = std::min<std::size_t>(o.users, 100);
      report.baseline = run_baseline({echo.url(), echo.pid(), o.procs, {}, {}}, conns, 8,
                                     std::min(o.step_seconds, baseline_seconds));
    }
    if (wants(o, "connect")) {
      std::cerr << "parley-bench: connect (" << o.connections << " connections)...\n";
      auto server = parleyd_for(o, data / "connect");
      report.connect = run_connect(server.t, o.connections, 3.0);
      ok = ok && report.connect->failed == 0;
    }
    // logins-after-load needs the one-to-one load: the two run as one.
    const bool relogin = wants(o, "logins-after-load");
    if (wants(o, "one-to-one") || relogin) {
      std::cerr << "parley-bench: one-to-one (" << o.users << " users, " << o.rates.size()
                << " steps of " << o.step_seconds << " s"
                << (relogin ? ", their logins before and after" : "") << ")...\n";
      auto server = parleyd_for(o, data / "one-to-one");
      report.one_to_one = run_one_to_one(server.t, o.users, o.rates, o.step_seconds,
                                         relogin ? std::optional(relogin_options{}) : std::nullopt);
      for (const auto& s : report.one_to_one->steps) ok = ok && s.lost == 0;
      if (const auto& l = report.one_to_one->logins_after_load) ok = ok && l->failed == 0;
    }
    if (wants(o, "drain")) {
      std::cerr << "parley-bench: drain (" << o.drain_messages << " messages)...\n";
      auto server = parleyd_for(o, data / "drain");
      report.drain = run_drain(server.t, o.drain_messages);
      ok = ok && report.drain->in_order && report.drain->received == report.drain->queued;
    }
    if (wants(o, "fanout")) {
      std::cerr << "parley-bench: fanout (a group of " << o.group_size << ", "
                << o.group_rates.size() << " steps of " << o.step_seconds << " s)...\n";
      auto server = parleyd_for(o, data / "fanout");
      report.fanout =
          run_fanout(server.t, o.group_size, o.group_rates, o.step_seconds, o.grace_seconds);
      // Nothing lost, repeated or cut off, and something stored: a server that refuses every
      // group message loses none.
      std::uint64_t stored = 0;
      for (const auto& s : report.fanout->steps) {
        ok = ok && s.load.lost == 0 && s.duplicates == 0;
        stored += s.load.stored;
      }
      ok = ok && report.fanout->disconnected == 0 && stored > 0;
    }
    if (wants(o, "media")) {
      std::cerr << "parley-bench: media (a file of " << o.media_bytes << " bytes up and down, "
                << o.media_uploads << " of " << o.media_small_bytes
                << " bytes at once, one-to-one at " << o.media_rate << " msg/s for 2 steps of "
                << o.step_seconds << " s, without and with transfers"
                << (o.media_s3.empty() ? "" : ", and the big file through " + o.media_s3)
                << ")...\n";
      auto server = parleyd_for(o, data / "media");
      media_options m;
      m.file_bytes = o.media_bytes;
      m.small_bytes = o.media_small_bytes;
      m.concurrent_uploads = o.media_uploads;
      m.users = o.users;
      m.rate = o.media_rate;
      m.step_seconds = o.step_seconds;
      m.work_dir = data / "media-files";
      // Started only when the scenario gets to it, and stopped at the end of this block.
      std::unique_ptr<spawned_server> s3_parleyd;
      if (!o.media_s3.empty()) {
        m.s3_store = o.media_s3;
        m.s3_server = [&] {
          s3_parleyd = start_parleyd(o, data / "media-s3", s3_media_config(o.media_s3));
          return target{s3_parleyd->url(), s3_parleyd->pid(), o.procs,
                        "127.0.0.1:" + std::to_string(s3_parleyd->port()), {}};
        };
      }
      report.media = run_media(server.t, m);
      // Errors only: a lost or cut file, a failed upload or download, a lost message.
      ok = ok && report.media->nothing_failed();
    }
    if (wants(o, "cluster")) {
      report.cluster = cluster_result{};
      for (int n : o.cluster_nodes) {
        std::cerr << "parley-bench: cluster of " << n << " node" << (n == 1 ? "" : "s")
                  << " (PostgreSQL, Redis; connect " << o.connections << " per node, one-to-one, "
                  << "fanout)...\n";
        report.cluster->points.push_back(run_cluster(o, data / ("cluster-" + std::to_string(n)), n));
        const auto& p = report.cluster->points.back();
        if (p.connect) ok = ok && p.connect->failed == 0;
        if (p.one_to_one) {
          for (const auto& s : p.one_to_one->steps) ok = ok && s.lost == 0;
          // The step on the connections of the logins after the load: where a node checks
          // each chat's first push (a loss or a repeat there is the check's).
          if (const auto& l = p.one_to_one->logins_after_load) ok = ok && l->failed == 0;
          if (const auto& s = p.one_to_one->after_relogin)
            ok = ok && s->lost == 0 && s->errors == 0 && s->received > 0;
        }
        if (p.fanout) {
          for (const auto& s : p.fanout->steps) ok = ok && s.load.lost == 0 && s.duplicates == 0;
          ok = ok && p.fanout->disconnected == 0;
        }
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "parley-bench: " << e.what() << '\n';
    fs::remove_all(data);
    return 1;
  }
  fs::remove_all(data);
  std::cout << render_table(report) << std::flush;
  std::cerr << write_results(report, o.out);
  if (!ok) {
    std::cerr << "parley-bench: messages were lost, reordered, repeated or not stored, or "
                 "connections or file transfers failed\n";
  }
  return ok ? 0 : 1;
}
