#include "scenarios.hpp"

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <utility>

#include "bench_worker.hpp"
#include "load_peer.hpp"
#include "process_sampler.hpp"
#include "run_on.hpp"

namespace parley::bench {
namespace {

namespace asio = boost::asio;
namespace v2 = parley::v2;
using asio::awaitable;
using clock = std::chrono::steady_clock;
constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch())
      .count();
}

clock::time_point from_ns(std::int64_t ns) {
  return clock::time_point(
      std::chrono::duration_cast<clock::duration>(std::chrono::nanoseconds(ns)));
}

void sleep_until_ns(std::int64_t ns) { std::this_thread::sleep_until(from_ns(ns)); }

awaitable<void> pause(std::chrono::nanoseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(as_tuple_awaitable);
}

// Runs task(0) .. task(count - 1), at most `parallel` at a time. A task that returns false
// stops new ones from starting (those running finish).
awaitable<void> run_bounded(std::size_t count, std::size_t parallel,
                            std::function<awaitable<bool>(std::size_t)> task) {
  std::size_t next = 0, running = 0;
  bool go_on = true;
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer done(ex, clock::time_point::max());
  auto one = [&](std::size_t i) -> awaitable<void> {
    if (!co_await task(i)) go_on = false;
    --running;
    done.cancel();
  };
  for (;;) {
    while (go_on && next < count && running < parallel) {
      ++running;
      asio::co_spawn(ex, one(next++), asio::detached);
    }
    if (running == 0) break;
    done.expires_at(clock::time_point::max());
    co_await done.async_wait(as_tuple_awaitable);
  }
}

// Sets up `peers` with at most `parallel` set-ups at a time; returns how many failed.
awaitable<std::size_t> set_up_all(std::vector<std::unique_ptr<load_peer>>& peers, std::string url,
                                  std::size_t first_source, bool register_first,
                                  std::size_t parallel) {
  std::size_t failed = 0;
  co_await run_bounded(peers.size(), parallel, [&](std::size_t i) -> awaitable<bool> {
    if (!co_await set_up(*peers[i], pick_url(url, first_source + i),
                         source_address(first_source + i), register_first))
      ++failed;
    co_return true;
  });
  co_return failed;
}

// Registers peers [begin, end) over one connection, `window` requests in flight; fills
// device/token.
awaitable<bool> register_range(std::vector<std::unique_ptr<load_peer>>& peers, std::size_t begin,
                               std::size_t end, std::string url) {
  load_peer conn(co_await asio::this_coro::executor);
  if (co_await conn.ws->connect(pick_url(url, 0), std::chrono::seconds(20))) co_return false;
  const std::size_t window = 128;
  std::size_t sent = begin, answered = 0;
  while (answered < end - begin) {
    while (sent < end && sent - begin - answered < window) {
      v2::Frame f;
      f.set_request_id(sent + 1);
      f.mutable_register_()->set_username(peers[sent]->username);
      conn.send(f);
      ++sent;
    }
    auto [ec, bytes] = co_await conn.ws->read();
    if (ec) co_return false;
    v2::Frame f;
    if (!f.ParseFromString(bytes) || f.request_id() == 0) continue;
    if (!f.has_registered() || f.request_id() <= begin || f.request_id() > end) co_return false;
    auto& p = *peers[f.request_id() - 1];
    p.device = f.registered().device_id();
    p.token = f.registered().token();
    ++answered;
  }
  co_await conn.ws->close(std::chrono::seconds(2));
  co_return true;
}

// Registers every peer. The server handles one connection's Registers one after another (each
// is a synced write) and closes an unauthenticated connection after 10 s, so the peers are
// registered in chunks, each on a connection of its own, several chunks at a time. 64 a chunk:
// on a PostgreSQL store (the cluster scenario), where a commit costs a few ms, 256 in a row
// could take longer than those 10 s.
awaitable<bool> register_all(std::vector<std::unique_ptr<load_peer>>& peers, std::string url) {
  constexpr std::size_t chunk = 64;
  constexpr std::size_t parallel = 32;
  bool ok = true;
  co_await run_bounded((peers.size() + chunk - 1) / chunk, parallel,
                       [&](std::size_t c) -> awaitable<bool> {
                         const std::size_t begin = c * chunk;
                         const std::size_t end = std::min(peers.size(), begin + chunk);
                         if (!co_await register_range(peers, begin, end, url)) ok = false;
                         co_return ok;
                       });
  co_return ok;
}

// Worker `w`'s share of `total` users (every procs-th one), named prefix + global index, so
// that any worker can address any user.
std::vector<std::unique_ptr<load_peer>> worker_share(asio::io_context& io, std::size_t total,
                                                     int procs, int w, const std::string& prefix) {
  std::vector<std::unique_ptr<load_peer>> peers;
  for (auto i = static_cast<std::size_t>(w); i < total; i += static_cast<std::size_t>(procs)) {
    peers.push_back(std::make_unique<load_peer>(io.get_executor()));
    peers.back()->username = prefix + std::to_string(i);
  }
  return peers;
}

std::string tag() {
  std::random_device rd;
  std::ostringstream s;
  s << std::hex << (rd() & 0xffffff);
  return s.str();
}

}  // namespace

process_sample sample_server(const target& t) {
  process_sample total = sample_process(t.pid);
  for (pid_t p : t.more_pids) {
    const auto s = sample_process(p);
    total.cpu_seconds += s.cpu_seconds;
    total.rss_bytes += s.rss_bytes;
    for (const auto& [name, cpu] : s.thread_cpu_seconds) total.thread_cpu_seconds[name] += cpu;
  }
  return total;
}

std::uint64_t server_rss(const target& t) {
  std::uint64_t total = resident_bytes(t.pid);
  for (pid_t p : t.more_pids) total += resident_bytes(p);
  return total;
}

// --- connect ---------------------------------------------------------------------------------

connect_result run_connect(const target& t, std::size_t connections, double hold_seconds) {
  const std::string run = tag();
  worker_pool pool(t.procs, [&](int w, worker_channel& ch) -> int {
    asio::io_context io(1);
    auto peers = worker_share(io, connections, t.procs, w, "c" + run + "_");
    if (!run_on(io, register_all(peers, t.url))) throw std::runtime_error("registration failed");
    ch.send("registered");
    ch.receive();  // go
    const auto start = clock::now();
    const auto cpu_start = sample_process(::getpid());
    const auto failed =
        run_on(io, set_up_all(peers, t.url, static_cast<std::size_t>(w) * 7919, false, 512));
    const double secs = std::chrono::duration<double>(clock::now() - start).count();
    const double cpu = sample_process(::getpid()).cpu_seconds - cpu_start.cpu_seconds;
    ch.send(std::to_string(peers.size() - failed) + " " + std::to_string(failed) + " " +
            std::to_string(secs) + " " + std::to_string(cpu));
    ch.receive();  // stop
    return 0;
  });
  pool.collect();
  connect_result r;
  r.wanted = connections;
  const auto before = sample_server(t);
  r.rss_before = before.rss_bytes;
  pool.broadcast("go");
  for (const auto& line : pool.collect()) {
    std::istringstream in(line);
    std::size_t ok = 0, failed = 0;
    double secs = 0, cpu = 0;
    in >> ok >> failed >> secs >> cpu;
    r.connected += ok;
    r.failed += failed;
    r.seconds = std::max(r.seconds, secs);
    r.ramp_generator_cpu_seconds += cpu;
  }
  r.connects_per_second = r.seconds > 0 ? static_cast<double>(r.connected) / r.seconds : 0;
  const auto held = sample_server(t);
  r.ramp_server_cpu_seconds = held.cpu_seconds - before.cpu_seconds;
  std::this_thread::sleep_for(std::chrono::duration<double>(hold_seconds));
  const auto after = sample_server(t);
  r.rss_after = after.rss_bytes;
  r.idle_server_cores = cores_used(held, after);
  if (r.connected > 0) {
    r.rss_per_connection = (static_cast<double>(r.rss_after) - static_cast<double>(r.rss_before)) /
                           static_cast<double>(r.connected);
  }
  pool.broadcast("stop");
  pool.join();
  return r;
}

// --- parleyd's store commit latencies, from GET /metrics --------------------------------------

namespace {

namespace beast = boost::beast;
namespace http = beast::http;

// The body of GET http://HOST:PORT/PATH, or none (no answer within 2 s, or not a 200).
awaitable<std::optional<std::string>> http_get(std::string host, std::string port,
                                               std::string path) {
  auto ex = co_await asio::this_coro::executor;
  asio::ip::tcp::resolver resolver(ex);
  auto [rec, endpoints] = co_await resolver.async_resolve(host, port, as_tuple_awaitable);
  if (rec) co_return std::nullopt;
  beast::tcp_stream stream(ex);
  stream.expires_after(std::chrono::seconds(2));  // connect, write and read together
  auto [cec, ep] = co_await stream.async_connect(endpoints, as_tuple_awaitable);
  if (cec) co_return std::nullopt;
  http::request<http::empty_body> req{http::verb::get, path, 11};
  req.set(http::field::host, host + ":" + port);
  req.keep_alive(false);
  auto [wec, wn] = co_await http::async_write(stream, req, as_tuple_awaitable);
  if (wec) co_return std::nullopt;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(4 << 20);
  auto [ec, n] = co_await http::async_read(stream, buffer, parser, as_tuple_awaitable);
  if (ec || parser.get().result() != http::status::ok) co_return std::nullopt;
  co_return std::move(parser.get().body());
}

// What one scrape says about the store's group commits.
struct commit_metrics {
  // parley_store_write_seconds_bucket: (le in seconds, cumulative count), +Inf last.
  std::vector<std::pair<double, std::uint64_t>> buckets;
  double sum_seconds = 0;    // parley_store_write_seconds_sum
  std::uint64_t count = 0;   // parley_store_write_seconds_count
  std::uint64_t writes = 0;  // parley_group_commit_requests_total
};

// Reads the lines it needs from the Prometheus text format; none if the histogram is missing.
std::optional<commit_metrics> parse_commit_metrics(const std::string& text) {
  constexpr std::string_view bucket = "parley_store_write_seconds_bucket{le=\"";
  constexpr std::string_view sum = "parley_store_write_seconds_sum ";
  constexpr std::string_view count = "parley_store_write_seconds_count ";
  constexpr std::string_view writes = "parley_group_commit_requests_total ";
  commit_metrics m;
  bool have_count = false;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(bucket)) {
      const auto close = line.find("\"}", bucket.size());
      if (close == std::string::npos) return std::nullopt;
      const std::string le = line.substr(bucket.size(), close - bucket.size());
      const double bound =
          le == "+Inf" ? std::numeric_limits<double>::infinity() : std::strtod(le.c_str(), nullptr);
      m.buckets.emplace_back(bound, std::strtoull(line.c_str() + close + 2, nullptr, 10));
    } else if (line.starts_with(sum)) {
      m.sum_seconds = std::strtod(line.c_str() + sum.size(), nullptr);
    } else if (line.starts_with(count)) {
      m.count = std::strtoull(line.c_str() + count.size(), nullptr, 10);
      have_count = true;
    } else if (line.starts_with(writes)) {
      m.writes = std::strtoull(line.c_str() + writes.size(), nullptr, 10);
    }
  }
  if (!have_count || m.buckets.empty() || !std::isinf(m.buckets.back().first)) return std::nullopt;
  return m;
}

}  // namespace

// The body of GET /metrics from `address` (HOST:PORT, an IPv6 host in brackets); none on any
// failure.
std::optional<std::string> get_metrics(const std::string& address) {
  const auto colon = address.rfind(':');
  if (address.empty() || colon == std::string::npos) return std::nullopt;
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  try {
    asio::io_context io(1);
    return run_on(io, http_get(host, address.substr(colon + 1), "/metrics"));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

namespace {

std::optional<commit_metrics> scrape_commit_metrics(const std::string& address) {
  const auto body = get_metrics(address);
  return body ? parse_commit_metrics(*body) : std::nullopt;
}

// The q-quantile of per-bucket counts (upper bound, count) holding `total` observations, as
// Prometheus's histogram_quantile() computes it: linear within the bucket where the rank
// falls, from the bucket below's bound (0 for the first); in the +Inf bucket, the last finite
// bound.
double bucket_quantile(const std::vector<std::pair<double, std::uint64_t>>& counts,
                       std::uint64_t total, double q) {
  const double rank = q * static_cast<double>(total);
  double lower = 0;
  std::uint64_t below = 0;
  for (const auto& [upper, n] : counts) {
    if (n > 0 && static_cast<double>(below + n) >= rank) {
      if (std::isinf(upper)) return lower;
      return lower + (upper - lower) * (rank - static_cast<double>(below)) / static_cast<double>(n);
    }
    below += n;
    lower = upper;
  }
  return lower;
}

// The commits between two scrapes; none if either is missing or they do not fit together (a
// different server, or one restarted in between).
std::optional<store_commit_stats> commits_between(const std::optional<commit_metrics>& from,
                                                  const std::optional<commit_metrics>& to) {
  if (!from || !to || from->buckets.size() != to->buckets.size() || to->count < from->count ||
      to->writes < from->writes)
    return std::nullopt;
  // Each bucket's own count only grows, so its delta is the commits that landed in it. The
  // buckets and _count are read one after another while commits go on, so the buckets' sum
  // (not _count) is the number of commits the percentiles are of.
  std::vector<std::pair<double, std::uint64_t>> counts;
  std::uint64_t previous_from = 0, previous_to = 0, total = 0;
  for (std::size_t i = 0; i < to->buckets.size(); ++i) {
    const auto [bound, cumulative_to] = to->buckets[i];
    const auto cumulative_from = from->buckets[i].second;
    if (from->buckets[i].first != bound || cumulative_to < previous_to ||
        cumulative_from < previous_from)
      return std::nullopt;
    const auto in_to = cumulative_to - previous_to, in_from = cumulative_from - previous_from;
    if (in_to < in_from) return std::nullopt;
    counts.emplace_back(bound, in_to - in_from);
    total += in_to - in_from;
    previous_to = cumulative_to;
    previous_from = cumulative_from;
  }
  store_commit_stats s;
  s.commits = total;
  s.writes = to->writes - from->writes;
  const auto counted = to->count - from->count;
  if (counted > 0)
    s.mean_ms = (to->sum_seconds - from->sum_seconds) * 1e3 / static_cast<double>(counted);
  if (total > 0) {
    s.p50_ms = bucket_quantile(counts, total, 0.5) * 1e3;
    s.p99_ms = bucket_quantile(counts, total, 0.99) * 1e3;
    s.p999_ms = bucket_quantile(counts, total, 0.999) * 1e3;
    for (const auto& [bound, n] : counts) {
      if (n > 0) s.max_le_ms = bound * 1e3;
    }
  }
  return s;
}

// parleyd as sampled at the boundaries 0 .. steps of a scenario's steps: its /proc sample and
// its store's commit metrics at each.
struct server_trace {
  std::vector<process_sample> process;
  std::vector<std::optional<commit_metrics>> commits;

  explicit server_trace(std::size_t steps) : process(steps + 1), commits(steps + 1) {}

  // Samples boundary k now; at the first, says on stderr when /metrics has no commit histogram.
  void sample(const target& t, std::size_t k) {
    process[k] = sample_server(t);
    commits[k] = scrape_commit_metrics(t.metrics_address);
    if (k == 0 && !commits[k] && !t.metrics_address.empty()) {
      std::fprintf(stderr,
                   "parley-bench: no parley_store_write_seconds from http://%s/metrics; the "
                   "store's commit latencies are left out\n",
                   t.metrics_address.c_str());
    }
  }

  // Fills the server's figures of step k (boundary k to k + 1) in `s`.
  void fill(std::size_t k, step_result& s) const {
    s.server_cores = cores_used(process[k], process[k + 1]);
    s.server_thread_cores = thread_cores_used(process[k], process[k + 1]);
    s.server_rss = process[k + 1].rss_bytes;
    s.store_commits = commits_between(commits[k], commits[k + 1]);
  }
};

// Adds one worker's load-generator figures for a step to `s` (its `seconds` set): its
// latencies, its cores, and whether it was generator-bound (behind its 1 ms schedule for more
// than 5 % of the step, or its core saturated).
void add_generator(step_result& s, const latency_histogram& h, double cores,
                   std::uint64_t late_ticks) {
  s.latency.merge(h);
  s.generator_cores = std::max(s.generator_cores, cores);
  s.generator_total_cores += cores;
  if (static_cast<double>(late_ticks) > s.seconds * 1000 * 0.05 || cores > 0.95)
    s.generator_bound = true;
}

}  // namespace

std::optional<std::uint64_t> metric_value(std::string_view body, std::string_view name) {
  while (!body.empty()) {
    const auto end = body.find('\n');
    const std::string_view line = body.substr(0, end);
    if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == ' ')
      return std::strtoull(std::string(line.substr(name.size() + 1)).c_str(), nullptr, 10);
    if (end == std::string_view::npos) break;
    body.remove_prefix(end + 1);
  }
  return std::nullopt;
}

// --- one-to-one ------------------------------------------------------------------------------

namespace {

struct step_counters {
  std::uint64_t sent = 0, stored = 0, received = 0, errors = 0, skipped = 0, late_ticks = 0;
  latency_histogram latency;
  process_sample cpu_start, cpu_end;
};

constexpr int payload_bytes = 100;
// The step the pacer is in; errors without a request id (failed acks) are counted there.
std::size_t current_step = 0;
// When this worker last received a message (ns), to tell a backlog still draining from a loss.
std::int64_t last_receive_ns = 0;
constexpr int request_step_shift = 40;  // request_id = step << 40 | counter

// Counts a read loop out of `n` (its worker's loops still running) when the loop ends.
struct count_down {
  std::size_t& n;
  ~count_down() { --n; }
};

// The step a frame read by a worker belongs to: the one its request id names, or `current`
// for a frame without one (a failed ack's Error).
std::size_t step_of(const v2::Frame& f, std::size_t current) {
  return f.request_id() == 0 ? current
                             : static_cast<std::size_t>(f.request_id() >> request_step_shift);
}

// Records that `p` received `e`, to be acked at the next flush_acks: `p` joins `dirty` with the
// first envelope since its last Ack.
void note_received(load_peer& p, const v2::Envelope& e, std::vector<load_peer*>& dirty) {
  if (p.acks.empty()) dirty.push_back(&p);
  p.received(e.chat_id(), e.seq());
}

// A server Error frame read on `p`'s connection: one request fewer in flight if it answers one,
// and the worker's first such error on stderr, its message after "parley-bench: " + `scenario`.
void server_error(load_peer& p, const v2::Frame& f, const char* scenario) {
  if (f.request_id() != 0) --p.in_flight;
  static bool reported = false;  // the first error says what went wrong; once per worker
  if (reported) return;
  reported = true;
  std::fprintf(stderr, "parley-bench: %sserver error (request %llu): %s\n", scenario,
               static_cast<unsigned long long>(f.request_id()), f.error().message().c_str());
}

// Reads `p`'s frames until its connection ends; `reading` counts the loops still running.
awaitable<void> read_loop(load_peer& p, std::vector<step_counters>& steps,
                          std::vector<load_peer*>& dirty, std::size_t& reading) {
  const count_down done{reading};
  for (;;) {
    auto [ec, bytes] = co_await p.ws->read();
    if (ec) co_return;
    v2::Frame f;
    if (!f.ParseFromString(bytes)) continue;
    const auto step = step_of(f, current_step);
    switch (f.body_case()) {
      case v2::Frame::kSendResult:
        --p.in_flight;
        if (step < steps.size()) ++steps[step].stored;
        break;
      case v2::Frame::kError:
        server_error(p, f, "");
        if (step < steps.size()) ++steps[step].errors;
        break;
      case v2::Frame::kEnvelope: {
        const auto& payload = f.envelope().payload();
        last_receive_ns = now_ns();
        if (payload.size() >= 12) {
          std::int64_t sent_ns;
          std::uint32_t sent_step;
          std::memcpy(&sent_ns, payload.data(), 8);
          std::memcpy(&sent_step, payload.data() + 8, 4);
          if (sent_step < steps.size()) {
            ++steps[sent_step].received;
            steps[sent_step].latency.record(
                static_cast<std::uint64_t>(std::max<std::int64_t>(0, now_ns() - sent_ns) / 1000));
          }
        }
        note_received(p, f.envelope(), dirty);
        break;
      }
      // Receipts (the recipients' delivered watermarks) need no ack, and the bench measures
      // delivery at the recipient; only their stamp is kept (this session is past QueueEmpty),
      // to be presented at the next login.
      case v2::Frame::kReceipts:
        p.keep_receipts_stamp(f.receipts().stamp());
        break;
      default:
        break;
    }
  }
}

// One Ack frame per peer that received something since the last call: a cumulative cursor per
// chat, so one frame however many messages the peer received in the meantime.
void flush_acks(std::vector<load_peer*>& dirty) {
  for (auto* d : dirty) d->flush_acks();
  dirty.clear();
}

// Sends at `rates` (one step each, from `start_ns`), counting into `steps`. The client_msg_ids
// (and the request ids' low bits) count up from `counter`: a second call on the same devices
// starts above the first's, which the server would otherwise answer as duplicates.
awaitable<void> pace(std::vector<std::unique_ptr<load_peer>>& peers, std::size_t users,
                     const std::string& run, const std::vector<double>& rates, double step_seconds,
                     int procs, std::int64_t start_ns, std::vector<step_counters>& steps,
                     std::vector<load_peer*>& dirty, std::uint64_t counter = 0) {
  std::mt19937_64 rng(static_cast<std::uint64_t>(::getpid()) * 7919u +
                      static_cast<std::uint64_t>(start_ns));
  std::uniform_int_distribution<std::size_t> pick_sender(0, peers.size() - 1);
  std::uniform_int_distribution<std::size_t> pick_user(0, users - 1);
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer tick(ex);
  v2::Frame frame;
  std::string payload(payload_bytes, 'x');
  const auto step_ns = static_cast<std::int64_t>(step_seconds * 1e9);
  for (std::size_t k = 0; k < rates.size(); ++k) {
    const std::int64_t begin = start_ns + static_cast<std::int64_t>(k) * step_ns;
    const std::int64_t end = begin + step_ns;
    const double share = rates[k] / procs;  // messages per second from this worker
    auto& s = steps[k];
    current_step = k;
    sleep_until_ns(begin);  // nothing else to do between steps
    s.cpu_start = sample_process(::getpid());
    std::int64_t expected = begin;
    for (std::int64_t now = now_ns(); now < end; now = now_ns()) {
      if (now - expected > 20'000'000) ++s.late_ticks;  // the loop itself is 20 ms behind
      const auto due = static_cast<std::uint64_t>(share * static_cast<double>(now - begin) / 1e9);
      while (s.sent + s.skipped < due) {
        auto& p = *peers[pick_sender(rng)];
        if (p.in_flight >= 200) {  // the server allows 256 in flight per connection
          ++s.skipped;
          continue;
        }
        // The server refuses messages to oneself: pick another recipient.
        std::string to;
        do {
          to = "u" + run + "_" + std::to_string(pick_user(rng));
        } while (to == p.username && users > 1);
        const std::int64_t t = now_ns();
        const auto step32 = static_cast<std::uint32_t>(k);
        std::memcpy(payload.data(), &t, 8);
        std::memcpy(payload.data() + 8, &step32, 4);
        frame.Clear();
        frame.set_request_id((static_cast<std::uint64_t>(k) << request_step_shift) | ++counter);
        auto* m = frame.mutable_send_message();
        m->set_to(std::move(to));
        m->set_client_msg_id(std::to_string(counter));
        m->set_payload(payload);
        // The generator measures the server, which never looks inside a payload: its bytes are a
        // timestamp and filler, labelled as a SignalMessage as every real client payload is.
        m->set_type(parley::v2::CIPHER_TYPE_SIGNAL_MESSAGE);
        p.send(frame);
        ++p.in_flight;
        ++s.sent;
      }
      flush_acks(dirty);
      expected = now + 1'000'000;
      tick.expires_at(from_ns(expected));
      co_await tick.async_wait(as_tuple_awaitable);
    }
    s.cpu_end = sample_process(::getpid());
  }
  // Stragglers: an overloaded server is still working through its backlog after the last
  // step. Keep receiving and acking until nothing has arrived for 2 s (at least 3 s, at most
  // 60 s); what is still missing then counts as lost.
  const std::int64_t finished = now_ns();
  for (;;) {
    const std::int64_t now = now_ns();
    if (now > finished + 60'000'000'000) break;
    if (now > finished + 3'000'000'000 && now > last_receive_ns + 2'000'000'000) break;
    flush_acks(dirty);
    co_await pause(std::chrono::milliseconds(5));
  }
}

// Set-ups at a time per worker when logins are timed: as many as run_connect's.
constexpr std::size_t login_parallel = 512;

struct worker_logins {
  std::size_t failed = 0;
  std::string line;  // "logged_in failed seconds cpu_seconds drained receipts with_stamp"
};

// Logs every peer in (connect, authenticate with the receipts stamp it kept, read to
// QueueEmpty; no registration), all of them at once, timed. Their connections are new ones.
worker_logins timed_logins(asio::io_context& io, std::vector<std::unique_ptr<load_peer>>& peers,
                           const std::string& url, int w) {
  const auto with_stamp = static_cast<std::size_t>(std::count_if(
      peers.begin(), peers.end(), [](const auto& p) { return p->receipts_stamp != 0; }));
  const auto start = clock::now();
  const auto cpu_start = sample_process(::getpid());
  const auto failed = run_on(
      io, set_up_all(peers, url, static_cast<std::size_t>(w) * 7919, false, login_parallel));
  const double secs = std::chrono::duration<double>(clock::now() - start).count();
  const double cpu = sample_process(::getpid()).cpu_seconds - cpu_start.cpu_seconds;
  std::uint64_t drained = 0, receipts = 0;
  for (const auto& p : peers) {
    drained += p->drained;
    receipts += p->receipts;
  }
  std::ostringstream out;
  out << peers.size() - failed << ' ' << failed << ' ' << secs << ' ' << cpu << ' ' << drained
      << ' ' << receipts << ' ' << with_stamp;
  return {failed, out.str()};
}

// Tells the workers to log their users in and sums what they measured; parleyd's CPU time is
// sampled around it.
login_result run_logins(worker_pool& pool, const target& t, std::size_t users) {
  login_result r;
  r.wanted = users;
  const auto before = sample_server(t);
  pool.broadcast("go");
  for (const auto& line : pool.collect()) {
    std::istringstream in(line);
    std::size_t ok = 0, failed = 0, with_stamp = 0;
    double secs = 0, cpu = 0;
    std::uint64_t drained = 0, receipts = 0;
    in >> ok >> failed >> secs >> cpu >> drained >> receipts >> with_stamp;
    r.logged_in += ok;
    r.failed += failed;
    r.seconds = std::max(r.seconds, secs);
    r.generator_cpu_seconds += cpu;
    r.drained += drained;
    r.receipts += receipts;
    r.with_stamp += with_stamp;
  }
  const auto after = sample_server(t);
  r.server_cpu_seconds = after.cpu_seconds - before.cpu_seconds;
  r.server_thread_cpu_seconds = thread_seconds_used(before, after);
  std::erase_if(r.server_thread_cpu_seconds, [](const auto& t) { return t.second <= 0; });
  r.logins_per_second = r.seconds > 0 ? static_cast<double>(r.logged_in) / r.seconds : 0;
  return r;
}

// The round with the median logins/s, with every round's rate kept beside it.
login_result median_round(std::vector<login_result> rounds) {
  std::vector<double> rates;
  rates.reserve(rounds.size());
  for (const auto& r : rounds) rates.push_back(r.logins_per_second);
  std::sort(rounds.begin(), rounds.end(), [](const login_result& a, const login_result& b) {
    return a.logins_per_second < b.logins_per_second;
  });
  login_result median = std::move(rounds[rounds.size() / 2]);
  median.round_rates = std::move(rates);
  return median;
}

awaitable<bool> wait_for_zero(const std::size_t& n, std::chrono::seconds limit) {
  const auto deadline = clock::now() + limit;
  while (n > 0 && clock::now() < deadline) co_await pause(std::chrono::milliseconds(10));
  co_return n == 0;
}

}  // namespace

namespace {

// A worker's counters of one step, as one line to the coordinator (read by add_step_line).
std::string step_line(const step_counters& s) {
  std::ostringstream out;
  out << s.sent << ' ' << s.stored << ' ' << s.received << ' ' << s.errors << ' ' << s.skipped
      << ' ' << s.late_ticks << ' ' << cores_used(s.cpu_start, s.cpu_end) << ' '
      << s.latency.serialize();
  return out.str();
}

// Adds one worker's step_line to the step's totals.
void add_step_line(step_result& s, const std::string& line);

// A step at `rate` for `seconds`, from every worker's step_line (the server's figures are
// filled by the caller).
step_result collect_step(worker_pool& pool, double rate, double seconds) {
  step_result s;
  s.offered_rate = rate;
  s.seconds = seconds;
  for (const auto& line : pool.collect()) add_step_line(s, line);
  s.lost = s.stored > s.received ? s.stored - s.received : 0;
  return s;
}

void add_step_line(step_result& s, const std::string& line) {
  std::istringstream in(line);
  std::uint64_t sent, stored, received, errors, skipped, late;
  double cores;
  in >> sent >> stored >> received >> errors >> skipped >> late >> cores;
  std::string rest;
  std::getline(in, rest);
  latency_histogram h;
  if (!h.parse(rest)) throw std::runtime_error("bad histogram from a worker");
  s.sent += sent;
  s.stored += stored;
  s.received += received;
  s.errors += errors;
  s.skipped += skipped;
  add_generator(s, h, cores, late);
}

}  // namespace

one_to_one_result run_one_to_one(const target& t, std::size_t users,
                                 const std::vector<double>& rates, double step_seconds,
                                 std::optional<relogin_options> relogin,
                                 const std::function<void(std::size_t)>& at_boundary) {
  const double rate_after_relogin = relogin ? relogin->rate_after : 0;
  const std::string run = tag();
  worker_pool pool(t.procs, [&](int w, worker_channel& ch) -> int {
    // Read loops still running; declared before `io`, whose destruction ends those left
    // suspended (each counts itself out).
    std::size_t reading = 0;
    asio::io_context io(1);
    auto peers = worker_share(io, users, t.procs, w, "u" + run + "_");
    if (!run_on(io, register_all(peers, t.url))) throw std::runtime_error("registration failed");
    ch.send("registered");
    ch.receive();  // go
    // With every user's connection dropped and no read loop running: new connections, and all
    // log in again when told, each presenting the receipts stamp its device kept (the peers
    // keep receipts_stamp across their connections).
    auto log_in_again = [&] {
      for (auto& p : peers) {
        p->ws = std::make_shared<client::ws_connection>(io.get_executor());
        p->in_flight = 0;
        p->acks.clear();
      }
      ch.send("offline");
      ch.receive();  // go
      ch.send(timed_logins(io, peers, t.url, w).line);
    };
    auto drop_and_log_in_again = [&] {
      for (auto& p : peers) p->ws->abort();
      log_in_again();
    };
    // The users' first logins, timed: the logins of a fresh server; then, with
    // logins-after-load, more rounds of them ("again"), for a median.
    const auto fresh = timed_logins(io, peers, t.url, w);
    if (fresh.failed != 0)
      throw std::runtime_error(std::to_string(fresh.failed) + " users failed to connect");
    ch.send(fresh.line);
    std::string told = ch.receive();
    for (; told == "again"; told = ch.receive()) drop_and_log_in_again();
    std::vector<load_peer*> dirty;
    // Steps at `step_rates` from `at` on the peers' current connections, each sent to the
    // coordinator as a step_line; client_msg_ids count up from `counter` (see pace()).
    auto run_steps = [&](const std::vector<double>& step_rates, std::int64_t at,
                         std::uint64_t counter) {
      std::vector<step_counters> steps(step_rates.size());
      for (auto& p : peers) {
        ++reading;
        asio::co_spawn(io, read_loop(*p, steps, dirty, reading), asio::detached);
      }
      run_on(io,
             pace(peers, users, run, step_rates, step_seconds, t.procs, at, steps, dirty, counter));
      for (auto& s : steps) ch.send(step_line(s));
    };
    run_steps(rates, std::stoll(told), 0);
    if (!relogin) return 0;
    // Every user goes offline at once, its TCP connection dropped, then logs in again when
    // told: the same logins as before the load, now with the chats, cursors and watermarks
    // the load left behind, each presenting the receipts stamp its device kept through its
    // login and the load's Receipts (the peers keep receipts_stamp across the new connections).
    // pace() acked everything received; what it did not receive (lost, or still arriving when
    // it gave up) is drained at the login and counted as drained. The read loops must be gone
    // before the peers get new connections, which set_up() reads alone.
    for (auto& p : peers) p->ws->abort();
    if (!run_on(io, wait_for_zero(reading, std::chrono::seconds(5))))
      throw std::runtime_error("dropped connections still being read");
    dirty.clear();
    log_in_again();
    // More rounds ("again"); then, with rate_after_relogin, one more step on the connections of
    // the last round ("load", then its start); then stop: every worker holds its connections
    // until all are measured.
    std::string next = ch.receive();
    for (; next == "again"; next = ch.receive()) drop_and_log_in_again();
    if (next == "load") {
      run_steps({rate_after_relogin}, std::stoll(ch.receive()), std::uint64_t{1} << 32);
      ch.receive();  // stop
    }
    return 0;
  });
  pool.collect();  // registered

  one_to_one_result r;
  r.users = users;
  // With relogin, each set of logins is measured in relogin->rounds rounds, reported by the
  // median round.
  auto login_rounds = [&](login_result first) {
    std::vector<login_result> rounds{std::move(first)};
    while (rounds.size() < relogin->rounds) {
      pool.broadcast("again");
      pool.collect();  // offline
      std::this_thread::sleep_for(std::chrono::seconds(2));
      rounds.push_back(run_logins(pool, t, users));
    }
    return median_round(std::move(rounds));
  };
  const auto fresh = run_logins(pool, t, users);
  if (relogin) r.logins_fresh = login_rounds(fresh);
  const std::int64_t start = now_ns() + 300'000'000;
  pool.broadcast(std::to_string(start));
  // At every step boundary: parleyd's /proc sample, then its /metrics (a scrape may take a few
  // ms under load; the histogram deltas then cover the steps shifted by as much).
  const auto step_ns = static_cast<std::int64_t>(step_seconds * 1e9);
  server_trace server(rates.size());
  for (std::size_t k = 0; k <= rates.size(); ++k) {
    sleep_until_ns(start + static_cast<std::int64_t>(k) * step_ns);
    server.sample(t, k);
    if (at_boundary) at_boundary(k);
  }
  for (std::size_t k = 0; k < rates.size(); ++k) {
    step_result s = collect_step(pool, rates[k], step_seconds);
    server.fill(k, s);
    r.steps.push_back(std::move(s));
  }
  if (at_boundary) at_boundary(rates.size() + 1);  // every worker is past its stragglers
  if (relogin) {
    pool.collect();  // offline
    // Let parleyd close every dropped session (presence, connection state) before the logins.
    std::this_thread::sleep_for(std::chrono::seconds(2));
    r.logins_after_load = login_rounds(run_logins(pool, t, users));
    if (rate_after_relogin > 0) {
      // One more step, on the connections the last logins made: every chat is older than its
      // connections now.
      pool.broadcast("load");
      const std::int64_t at = now_ns() + 300'000'000;
      pool.broadcast(std::to_string(at));
      server_trace trace(1);
      sleep_until_ns(at);
      trace.sample(t, 0);
      sleep_until_ns(at + step_ns);
      trace.sample(t, 1);
      step_result s = collect_step(pool, rate_after_relogin, step_seconds);
      trace.fill(0, s);
      r.after_relogin = std::move(s);
    }
    pool.broadcast("stop");
  }
  pool.join();
  for (const auto& s : r.steps) {
    const bool ok = s.lost == 0 && s.errors == 0 && s.skipped == 0 && s.latency.count() > 0 &&
                    s.latency.percentile(0.99) < 100'000;
    if (ok && s.offered_rate > r.sustainable_rate) r.sustainable_rate = s.offered_rate;
  }
  return r;
}

// --- drain -------------------------------------------------------------------------------------

namespace {

awaitable<drain_result> drain_once(std::string url, std::size_t messages) {
  auto ex = co_await asio::this_coro::executor;
  const std::string run = tag();
  load_peer sender(ex), receiver(ex);
  sender.username = "ds" + run;
  receiver.username = "dr" + run;
  if (!co_await set_up(sender, pick_url(url, 0), source_address(0), true))
    throw std::runtime_error("drain: sender set-up failed");
  if (!co_await set_up(receiver, pick_url(url, 1), source_address(1), true))
    throw std::runtime_error("drain: receiver set-up failed");
  co_await receiver.ws->close(std::chrono::seconds(2));

  // Queue `messages` for the offline receiver, 200 in flight.
  std::size_t sent = 0, stored = 0;
  std::string payload(payload_bytes, 'd');
  while (stored < messages) {
    while (sent < messages && sent - stored < 200) {
      v2::Frame f;
      f.set_request_id(++sent);
      auto* m = f.mutable_send_message();
      m->set_to(receiver.username);
      m->set_client_msg_id(std::to_string(sent));
      m->set_payload(payload);
      // The generator measures the server, which never looks inside a payload: its bytes are a
      // timestamp and filler, labelled as a SignalMessage as every real client payload is.
      m->set_type(parley::v2::CIPHER_TYPE_SIGNAL_MESSAGE);
      sender.send(f);
    }
    auto [ec, bytes] = co_await sender.ws->read();
    if (ec) throw std::runtime_error("drain: sender connection lost");
    v2::Frame f;
    if (!f.ParseFromString(bytes)) continue;
    if (f.has_error()) throw std::runtime_error("drain: send failed: " + f.error().message());
    if (f.has_send_result()) ++stored;
  }

  drain_result r;
  r.queued = messages;
  load_peer again(ex);
  again.device = receiver.device;
  again.token = receiver.token;
  again.receipts_stamp = receiver.receipts_stamp;
  const auto start = clock::now();
  if (co_await again.ws->connect(pick_url(url, 0), std::chrono::seconds(10), source_address(2)))
    throw std::runtime_error("drain: reconnect failed");
  v2::Frame auth;
  auth.set_request_id(1);
  auth.mutable_authenticate()->set_device_id(again.device);
  auth.mutable_authenticate()->set_token(again.token);
  auth.mutable_authenticate()->set_receipts_since(again.receipts_stamp);
  again.send(auth);
  std::uint64_t last_seq = 0;
  r.in_order = true;
  while (r.received < messages) {
    auto [ec, bytes] = co_await again.ws->read();
    if (ec) break;
    v2::Frame f;
    if (!f.ParseFromString(bytes) || !f.has_envelope()) continue;
    if (f.envelope().seq() != last_seq + 1) r.in_order = false;
    last_seq = f.envelope().seq();
    ++r.received;
    again.received(f.envelope().chat_id(), f.envelope().seq());
  }
  r.milliseconds = std::chrono::duration<double, std::milli>(clock::now() - start).count();
  again.flush_acks();
  co_await again.ws->close(std::chrono::seconds(2));
  co_await sender.ws->close(std::chrono::seconds(2));
  co_return r;
}

}  // namespace

drain_result run_drain(const target& t, std::size_t messages) {
  asio::io_context io(1);
  return run_on(io, drain_once(t.url, messages));
}

// --- fanout: one group, one sender, every member online ----------------------------------------

namespace {

// A group message's payload starts with its send time (ns), the step it was sent in and its
// index (the sender's count of messages sent before it), then filler up to payload_bytes.
constexpr std::size_t fanout_header_bytes = 16;

struct fanout_step_counters {
  // Group messages (the sender's worker only): sent, stored (✓), refused, skipped.
  std::uint64_t sent = 0, stored = 0, errors = 0, skipped = 0, late_ticks = 0;
  std::uint64_t first_index = 0;  // the index of the step's first message
  // Deliveries to this worker's members: of this step's messages by their deadline and after
  // it, repeated ones, and those of any step's messages that arrived within this step.
  std::uint64_t received = 0, late = 0, duplicates = 0, in_window = 0;
  latency_histogram latency;  // per delivery of this step's messages, µs
  process_sample cpu_start, cpu_end;
};

// What one worker's members did with one group message by its deadline.
struct message_tally {
  std::uint32_t members = 0;  // how many had it
  std::uint64_t last_us = 0;  // the latest of their receive times minus its send time
};

// One worker's side of the fanout scenario, shared by its read loops and its pacer (all on the
// worker's one thread).
struct fanout_worker {
  std::uint64_t chat_id = 0;
  std::int64_t start_ns = 0, step_ns = 0, grace_ns = 0;
  std::vector<fanout_step_counters> steps;
  std::size_t current_step = 0;  // the pacer's; errors without a request id count there
  // By message index, as many as the rates can send: what this worker's members received by
  // each message's deadline, and (the sender's worker only) whether it was stored.
  std::vector<message_tally> tallies;
  std::vector<char> stored;
  std::uint64_t next_index = 0;   // the sender's next message
  std::vector<load_peer*> dirty;  // members that received something since the last ack tick
  std::int64_t last_receive_ns = 0;

  // A message of step k must have reached every recipient by then, or it counts as lost.
  std::int64_t deadline_ns(std::size_t k) const {
    return start_ns + static_cast<std::int64_t>(k + 1) * step_ns + grace_ns;
  }
  // The step whose window holds `ns`; steps.size() outside them all.
  std::size_t window_of(std::int64_t ns) const {
    if (ns < start_ns) return steps.size();
    return std::min(steps.size(), static_cast<std::size_t>((ns - start_ns) / step_ns));
  }
};

// The creator (already registered) logs in and creates the group of users prefix0 ..
// prefix<size - 1>, itself being prefix0; returns the GroupInfo and the CreateGroup round trip
// in ms. Throws if the server refuses or answers otherwise.
awaitable<std::pair<v2::GroupInfo, double>> create_group(load_peer& creator, std::string url,
                                                         std::string prefix, std::size_t size) {
  if (!co_await set_up(creator, pick_url(url, 0), source_address(0), false))
    throw std::runtime_error("fanout: the creator's login failed");
  v2::Frame f;
  auto* g = f.mutable_create_group();
  g->set_name("fanout " + prefix);
  g->set_client_request_id("create " + prefix);
  for (std::size_t i = 1; i < size; ++i) g->add_members(prefix + std::to_string(i));
  const auto start = clock::now();
  const auto r = co_await round_trip(creator, std::move(f));
  const double ms = std::chrono::duration<double, std::milli>(clock::now() - start).count();
  if (r.has_error()) {
    throw std::runtime_error("fanout: CreateGroup refused (error " +
                             std::to_string(static_cast<int>(r.error().code())) +
                             "): " + r.error().message());
  }
  if (!r.has_group_info()) throw std::runtime_error("fanout: CreateGroup got no GroupInfo");
  if (static_cast<std::size_t>(r.group_info().members_size()) != size) {
    throw std::runtime_error("fanout: the group has " +
                             std::to_string(r.group_info().members_size()) + " members, not " +
                             std::to_string(size));
  }
  co_return std::pair{r.group_info(), ms};
}

// Logs in peers [first, end) `login_parallel` at a time, each reading its drain to QueueEmpty
// and acking it. The drain of a member that joined the group before logging in must bring the
// group's creation event (create_seq): a member without it counts as `missing`. Returns
// (failed logins, missing).
awaitable<std::pair<std::size_t, std::size_t>> join_group(
    std::vector<std::unique_ptr<load_peer>>& peers, std::size_t first, std::string url,
    std::size_t first_source, std::uint64_t chat_id, std::uint64_t create_seq) {
  std::size_t failed = 0, missing = 0;
  co_await run_bounded(peers.size() - first, login_parallel, [&](std::size_t i) -> awaitable<bool> {
    auto& p = *peers[first + i];
    if (!co_await set_up(p, pick_url(url, first_source + first + i),
                         source_address(first_source + first + i), false, true)) {
      ++failed;
      co_return true;
    }
    const bool has_event = std::any_of(p.acks.begin(), p.acks.end(), [&](const auto& a) {
      return a.first == chat_id && a.second >= create_seq;
    });
    if (!has_event) ++missing;
    p.flush_acks();
    co_return true;
  });
  co_return std::pair{failed, missing};
}

// Reads a member's frames until its connection ends. `highest_seq` is the highest seq of the
// group's messages it has had; `reading` counts the loops still running.
awaitable<void> fanout_read_loop(load_peer& p, std::uint64_t& highest_seq, fanout_worker& w,
                                 std::size_t& reading) {
  const count_down done{reading};
  constexpr std::uint64_t counter_mask = (std::uint64_t{1} << request_step_shift) - 1;
  for (;;) {
    auto [ec, bytes] = co_await p.ws->read();
    if (ec) co_return;
    v2::Frame f;
    if (!f.ParseFromString(bytes)) continue;
    const auto step = step_of(f, w.current_step);
    switch (f.body_case()) {
      case v2::Frame::kSendResult: {
        --p.in_flight;
        if (step < w.steps.size()) ++w.steps[step].stored;
        const std::uint64_t index = (f.request_id() & counter_mask) - 1;
        if (index < w.stored.size()) w.stored[index] = 1;
        break;
      }
      case v2::Frame::kError:
        server_error(p, f, "fanout: ");
        if (step < w.steps.size()) ++w.steps[step].errors;
        break;
      case v2::Frame::kEnvelope: {
        const auto& e = f.envelope();
        // Every envelope is acked, the group's creation event too, as a real client does.
        note_received(p, e, w.dirty);
        // Only the sender's group messages count: not the group's events (system messages),
        // nor a member's own message should the server push it back.
        if (e.chat_id() != w.chat_id || e.has_event() || e.from() == p.username ||
            e.payload().size() < fanout_header_bytes)
          break;
        const std::int64_t now = now_ns();
        w.last_receive_ns = now;
        std::int64_t sent_ns;
        std::uint32_t sent_step, index;
        std::memcpy(&sent_ns, e.payload().data(), 8);
        std::memcpy(&sent_step, e.payload().data() + 8, 4);
        std::memcpy(&index, e.payload().data() + 12, 4);
        if (sent_step >= w.steps.size() || index >= w.tallies.size()) break;
        auto& s = w.steps[sent_step];
        // A group's messages reach a member in seq order: one at or below what it has is a
        // repeat (or out of order), and must not make up for a member that missed it.
        if (e.seq() <= highest_seq) {
          ++s.duplicates;
          break;
        }
        highest_seq = e.seq();
        const auto us = static_cast<std::uint64_t>(std::max<std::int64_t>(0, now - sent_ns) / 1000);
        s.latency.record(us);
        if (now <= w.deadline_ns(sent_step)) {
          ++s.received;
          auto& t = w.tallies[index];
          ++t.members;
          t.last_us = std::max(t.last_us, us);
        } else {
          ++s.late;
        }
        if (const auto k = w.window_of(now); k < w.steps.size()) ++w.steps[k].in_window;
        break;
      }
      // Receipts (in a group, the lowest delivered watermark of the other members) need no
      // ack; only their stamp is kept, as one-to-one does.
      case v2::Frame::kReceipts:
        p.keep_receipts_stamp(f.receipts().stamp());
        break;
      default:
        break;
    }
  }
}

// A worker's side of the steps. On a 1 ms schedule the sender (in worker 0; null in the
// others) sends its step's rate to the group, and every member that received something since
// the last tick acks it: one cumulative Ack per member, as one-to-one's recipients do, so that
// parleyd sees a group's real ack load. After the last step, keeps receiving and acking until
// the last deadline has passed and nothing has arrived for 2 s (at most 60 s after it), so
// that late deliveries are told from missing ones.
awaitable<void> fanout_pace(load_peer* sender, const std::vector<double>& rates, fanout_worker& w) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer tick(ex);
  v2::Frame frame;
  std::string payload(payload_bytes, 'g');
  for (std::size_t k = 0; k < rates.size(); ++k) {
    const std::int64_t begin = w.start_ns + static_cast<std::int64_t>(k) * w.step_ns;
    const std::int64_t end = begin + w.step_ns;
    auto& s = w.steps[k];
    w.current_step = k;
    sleep_until_ns(begin);  // nothing else to do between steps
    s.cpu_start = sample_process(::getpid());
    s.first_index = w.next_index;
    std::int64_t expected = begin;
    for (std::int64_t now = now_ns(); now < end; now = now_ns()) {
      if (now - expected > 20'000'000) ++s.late_ticks;  // the loop itself is 20 ms behind
      const auto due =
          sender ? static_cast<std::uint64_t>(rates[k] * static_cast<double>(now - begin) / 1e9)
                 : 0;
      while (s.sent + s.skipped < due) {
        // The server allows 256 requests in flight per connection.
        if (sender->in_flight >= 200 || w.next_index >= w.stored.size()) {
          ++s.skipped;
          continue;
        }
        const std::uint64_t index = w.next_index++;
        const std::int64_t t = now_ns();
        const auto step32 = static_cast<std::uint32_t>(k);
        const auto index32 = static_cast<std::uint32_t>(index);
        std::memcpy(payload.data(), &t, 8);
        std::memcpy(payload.data() + 8, &step32, 4);
        std::memcpy(payload.data() + 12, &index32, 4);
        frame.Clear();
        frame.set_request_id((static_cast<std::uint64_t>(k) << request_step_shift) | (index + 1));
        auto* m = frame.mutable_send_message();
        m->set_chat_id(w.chat_id);
        m->set_client_msg_id(std::to_string(index + 1));
        m->set_payload(payload);
        // The server never looks inside a payload: a group message is labelled as a
        // SenderKeyMessage, with no recipient registration id, as a real client's is.
        m->set_type(v2::CIPHER_TYPE_SENDER_KEY_MESSAGE);
        sender->send(frame);
        ++sender->in_flight;
        ++s.sent;
      }
      flush_acks(w.dirty);
      expected = now + 1'000'000;
      tick.expires_at(from_ns(expected));
      co_await tick.async_wait(as_tuple_awaitable);
    }
    s.cpu_end = sample_process(::getpid());
  }
  const std::int64_t last_deadline = w.deadline_ns(rates.size() - 1);
  for (;;) {
    const std::int64_t now = now_ns();
    if (now > last_deadline + 60'000'000'000) break;
    if (now >= last_deadline && now > w.last_receive_ns + 2'000'000'000) break;
    flush_acks(w.dirty);
    co_await pause(std::chrono::milliseconds(5));
  }
  flush_acks(w.dirty);
}

}  // namespace

fanout_result run_fanout(const target& t, std::size_t group_size, const std::vector<double>& rates,
                         double step_seconds, double grace_seconds) {
  if (rates.empty() || group_size < 2) throw std::invalid_argument("fanout: no steps or no group");
  const std::string prefix = "g" + tag() + "_";
  const auto step_ns = static_cast<std::int64_t>(step_seconds * 1e9);
  const auto grace_ns = static_cast<std::int64_t>(grace_seconds * 1e9);
  // What the sender can send at most: its schedule's due count stays below rate x step length.
  std::size_t max_messages = 0;
  for (double rate : rates)
    max_messages += static_cast<std::size_t>(std::ceil(rate * step_seconds));
  worker_pool pool(t.procs, [&](int w, worker_channel& ch) -> int {
    // Declared before `io`, whose destruction ends the read loops left suspended (each counts
    // itself out and refers to these).
    fanout_worker state;
    std::vector<std::uint64_t> highest_seq;
    std::size_t reading = 0;
    asio::io_context io(1);
    // User i is worker (i mod procs)'s: user 0, the creator and sender, is worker 0's first.
    auto peers = worker_share(io, group_size, t.procs, w, prefix);
    highest_seq.assign(peers.size(), 0);
    if (!run_on(io, register_all(peers, t.url))) throw std::runtime_error("registration failed");
    ch.send("registered");
    ch.receive();  // create
    load_peer* sender = nullptr;
    std::size_t first_member = 0;  // the first peer of this worker still to log in
    if (w == 0) {
      sender = peers[0].get();
      first_member = 1;
      const auto [info, ms] = run_on(io, create_group(*sender, t.url, prefix, group_size));
      // The creation event is the group's first entry: the creator acks it like the others.
      const std::uint64_t create_seq = info.seq() != 0 ? info.seq() : 1;
      sender->received(info.chat_id(), create_seq);
      sender->flush_acks();
      ch.send(std::to_string(info.chat_id()) + ' ' + std::to_string(create_seq) + ' ' +
              std::to_string(ms));
    } else {
      ch.send("0 0 0");
    }
    std::uint64_t create_seq = 0;
    std::istringstream(ch.receive()) >> state.chat_id >> create_seq;
    // Every other member logs in: its drain brings the creation event, which it acks.
    const auto join_start = clock::now();
    const auto [failed, missing] =
        run_on(io, join_group(peers, first_member, t.url, static_cast<std::size_t>(w) * 7919,
                              state.chat_id, create_seq));
    if (failed != 0) throw std::runtime_error(std::to_string(failed) + " members failed to log in");
    if (missing != 0) {
      throw std::runtime_error(std::to_string(missing) +
                               " members had no creation event of the group before QueueEmpty");
    }
    ch.send(std::to_string(std::chrono::duration<double>(clock::now() - join_start).count()));

    state.start_ns = std::stoll(ch.receive());
    state.step_ns = step_ns;
    state.grace_ns = grace_ns;
    state.steps.resize(rates.size());
    state.tallies.resize(max_messages);
    if (sender) state.stored.assign(max_messages, 0);
    for (std::size_t i = 0; i < peers.size(); ++i) {
      ++reading;
      asio::co_spawn(io, fanout_read_loop(*peers[i], highest_seq[i], state, reading),
                     asio::detached);
    }
    run_on(io, fanout_pace(sender, rates, state));
    for (const auto& s : state.steps) {
      std::ostringstream out;
      out << s.sent << ' ' << s.stored << ' ' << s.errors << ' ' << s.skipped << ' ' << s.late_ticks
          << ' ' << s.first_index << ' ' << s.received << ' ' << s.late << ' ' << s.duplicates
          << ' ' << s.in_window << ' ' << cores_used(s.cpu_start, s.cpu_end) << ' '
          << s.latency.serialize();
      ch.send(out.str());
    }
    // The members whose connection ended, then the tallies up to the last one with a delivery:
    // "closed n members0 last_us0 members1 ...".
    std::size_t n = state.tallies.size();
    while (n > 0 && state.tallies[n - 1].members == 0) --n;
    std::ostringstream tallies;
    tallies << peers.size() - reading << ' ' << n;
    for (std::size_t i = 0; i < n; ++i)
      tallies << ' ' << state.tallies[i].members << ' ' << state.tallies[i].last_us;
    ch.send(tallies.str());
    // The sender's stored flags, one character per message sent ('1': ✓), after an "s".
    std::string stored = "s";
    for (std::uint64_t i = 0; i < state.next_index; ++i) stored += state.stored[i] ? '1' : '0';
    ch.send(stored);
    return 0;
  });
  pool.collect();  // registered

  fanout_result r;
  r.group_size = group_size;
  r.recipients = group_size - 1;
  r.grace_seconds = grace_seconds;
  pool.broadcast("create");
  const std::string created = pool.collect().front();  // worker 0's: "chat_id seq ms"
  {
    std::istringstream in(created);
    std::uint64_t chat_id = 0, seq = 0;
    in >> chat_id >> seq >> r.create_ms;
    pool.broadcast(std::to_string(chat_id) + ' ' + std::to_string(seq));
  }
  for (const auto& line : pool.collect())
    r.join_seconds = std::max(r.join_seconds, std::stod(line));
  r.server_rss_before = server_rss(t);

  const std::int64_t start = now_ns() + 300'000'000;
  pool.broadcast(std::to_string(start));
  // At every step boundary parleyd's /proc sample and /metrics, as in one-to-one; in between,
  // its RSS every 100 ms for the step's peak.
  server_trace server(rates.size());
  std::vector<std::uint64_t> rss_peak(rates.size(), 0);
  for (std::size_t k = 0; k <= rates.size(); ++k) {
    const std::int64_t boundary = start + static_cast<std::int64_t>(k) * step_ns;
    if (k > 0) {
      for (std::int64_t at = now_ns() + 100'000'000; at < boundary; at += 100'000'000) {
        sleep_until_ns(at);
        rss_peak[k - 1] = std::max(rss_peak[k - 1], server_rss(t));
      }
    }
    sleep_until_ns(boundary);
    server.sample(t, k);
    if (k > 0) rss_peak[k - 1] = std::max(rss_peak[k - 1], server.process[k].rss_bytes);
  }

  // The workers' counters by step; the sender's (worker 0's) say which messages each step sent.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> sent_range(rates.size());  // first, count
  for (std::size_t k = 0; k < rates.size(); ++k) {
    fanout_step_result f;
    auto& s = f.load;
    s.offered_rate = rates[k];
    s.seconds = step_seconds;
    const auto lines = pool.collect();
    for (std::size_t w = 0; w < lines.size(); ++w) {
      std::istringstream in(lines[w]);
      std::uint64_t sent, stored, errors, skipped, late_ticks, first_index, received, late,
          duplicates, in_window;
      double cores;
      in >> sent >> stored >> errors >> skipped >> late_ticks >> first_index >> received >> late >>
          duplicates >> in_window >> cores;
      std::string rest;
      std::getline(in, rest);
      latency_histogram h;
      if (!in || !h.parse(rest)) throw std::runtime_error("bad step counters from a worker");
      if (w == 0) sent_range[k] = {first_index, sent};
      s.sent += sent;
      s.stored += stored;
      s.errors += errors;
      s.skipped += skipped;
      s.received += received;
      f.late += late;
      f.duplicates += duplicates;
      f.deliveries_in_window += in_window;
      add_generator(s, h, cores, late_ticks);
    }
    server.fill(k, s);
    f.server_rss_peak = rss_peak[k];
    r.steps.push_back(std::move(f));
  }
  // Per message, the workers' tallies merged: how many recipients had it by its deadline, and
  // the latest of them.
  std::vector<message_tally> tallies(max_messages);
  for (const auto& line : pool.collect()) {
    std::istringstream in(line);
    std::size_t closed = 0, n = 0;
    in >> closed >> n;
    r.disconnected += closed;
    for (std::size_t i = 0; i < n && i < tallies.size(); ++i) {
      std::uint32_t members = 0;
      std::uint64_t last_us = 0;
      in >> members >> last_us;
      tallies[i].members += members;
      tallies[i].last_us = std::max(tallies[i].last_us, last_us);
    }
    if (!in) throw std::runtime_error("bad tallies from a worker");
  }
  const std::string stored = pool.collect().front().substr(1);  // the sender's flags
  pool.join();
  for (std::size_t k = 0; k < rates.size(); ++k) {
    auto& f = r.steps[k];
    const auto [first, count] = sent_range[k];
    for (std::uint64_t i = first; i < first + count && i < stored.size(); ++i) {
      if (stored[i] != '1') continue;  // refused or never answered: an error, not a loss
      if (tallies[i].members >= r.recipients)
        f.last_member.record(tallies[i].last_us);
      else
        ++f.load.lost;
    }
  }
  for (const auto& f : r.steps) {
    const bool ok = f.load.lost == 0 && f.load.errors == 0 && f.load.skipped == 0 &&
                    f.last_member.count() > 0 && f.last_member.percentile(0.99) < 100'000;
    if (ok && f.load.offered_rate > r.sustainable_rate) {
      r.sustainable_rate = f.load.offered_rate;
      r.sustained_deliveries_per_second = f.deliveries_per_second();
    }
  }
  return r;
}

// --- baseline: the raw echo ----------------------------------------------------------------------

baseline_result run_baseline(const target& t, std::size_t connections, int window, double seconds) {
  worker_pool pool(t.procs, [&](int w, worker_channel& ch) -> int {
    asio::io_context io(1);
    std::vector<std::shared_ptr<client::ws_connection>> conns;
    for (std::size_t i = static_cast<std::size_t>(w); i < connections;
         i += static_cast<std::size_t>(t.procs)) {
      conns.push_back(std::make_shared<client::ws_connection>(io.get_executor()));
      if (run_on(io, conns.back()->connect(pick_url(t.url, i), std::chrono::seconds(10), source_address(i)))) {
        throw std::runtime_error("echo connect failed");
      }
    }
    ch.send("ready");
    const std::int64_t start = std::stoll(ch.receive());
    const std::int64_t end = start + static_cast<std::int64_t>(seconds * 1e9);
    // From just before the window to the last reply of the window: the echo's own CPU plus a
    // few hundred ms of waiting, which costs nothing.
    const auto cpu_start = sample_process(::getpid());
    std::uint64_t trips = 0;
    latency_histogram latency;
    std::size_t running = conns.size();
    for (auto& c : conns) {
      asio::co_spawn(
          io,
          [&, c]() -> awaitable<void> {
            co_await pause(from_ns(start) - clock::now());
            std::string payload(payload_bytes, 'e');
            auto send = [&] {
              const std::int64_t t0 = now_ns();
              std::memcpy(payload.data(), &t0, 8);
              c->send(payload);
            };
            for (int i = 0; i < window; ++i) send();
            int outstanding = window;
            while (outstanding > 0) {
              auto [ec, bytes] = co_await c->read();
              if (ec) break;
              --outstanding;
              std::int64_t t0;
              std::memcpy(&t0, bytes.data(), 8);
              const std::int64_t now = now_ns();
              if (t0 >= start && now <= end) {
                ++trips;
                latency.record(static_cast<std::uint64_t>((now - t0) / 1000));
              }
              if (now < end) {
                send();
                ++outstanding;
              }
            }
            if (--running == 0) io.stop();
          },
          asio::detached);
    }
    io.restart();
    io.run();
    const double cpu = sample_process(::getpid()).cpu_seconds - cpu_start.cpu_seconds;
    ch.send(std::to_string(trips) + " " + std::to_string(cpu) + " " + latency.serialize());
    return 0;
  });
  pool.collect();
  const std::int64_t start = now_ns() + 300'000'000;
  pool.broadcast(std::to_string(start));
  sleep_until_ns(start);
  const auto s0 = sample_server(t);
  sleep_until_ns(start + static_cast<std::int64_t>(seconds * 1e9));
  const auto s1 = sample_server(t);
  baseline_result r;
  r.connections = connections;
  r.seconds = seconds;
  for (const auto& line : pool.collect()) {
    std::istringstream in(line);
    std::uint64_t trips = 0;
    double cpu = 0;
    in >> trips >> cpu;
    r.generator_cores += cpu / seconds;
    std::string rest;
    std::getline(in, rest);
    latency_histogram h;
    if (!h.parse(rest)) throw std::runtime_error("bad histogram from a worker");
    r.round_trips += trips;
    r.latency.merge(h);
  }
  pool.join();
  r.rate = static_cast<double>(r.round_trips) / seconds;
  r.server_cores = cores_used(s0, s1);
  return r;
}

}  // namespace parley::bench
