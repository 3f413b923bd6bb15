#include "scenarios.hpp"

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "bench_worker.hpp"
#include "load_peer.hpp"
#include "process_sampler.hpp"

namespace parley::bench {
namespace {

namespace asio = boost::asio;
namespace v1 = parley::v1;
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

// Runs `a` on `io` to completion (other coroutines on `io` keep running meanwhile).
template <class T>
T run_on(asio::io_context& io, awaitable<T> a) {
  std::optional<T> out;
  std::exception_ptr error;
  asio::co_spawn(io, std::move(a), [&](std::exception_ptr e, T v) {
    error = e;
    out = std::move(v);
    io.stop();
  });
  io.restart();
  io.run();
  if (error) std::rethrow_exception(error);
  return std::move(*out);
}

void run_on(asio::io_context& io, awaitable<void> a) {
  std::exception_ptr error;
  asio::co_spawn(io, std::move(a), [&](std::exception_ptr e) {
    error = e;
    io.stop();
  });
  io.restart();
  io.run();
  if (error) std::rethrow_exception(error);
}

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
    if (!co_await set_up(*peers[i], url, source_address(first_source + i), register_first))
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
  if (co_await conn.ws->connect(url, std::chrono::seconds(20))) co_return false;
  const std::size_t window = 128;
  std::size_t sent = begin, answered = 0;
  while (answered < end - begin) {
    while (sent < end && sent - begin - answered < window) {
      v1::Frame f;
      f.set_request_id(sent + 1);
      f.mutable_register_()->set_username(peers[sent]->username);
      conn.send(f);
      ++sent;
    }
    auto [ec, bytes] = co_await conn.ws->read();
    if (ec) co_return false;
    v1::Frame f;
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
// registered in chunks, each on a connection of its own, several chunks at a time.
awaitable<bool> register_all(std::vector<std::unique_ptr<load_peer>>& peers, std::string url) {
  constexpr std::size_t chunk = 256;
  constexpr std::size_t parallel = 8;
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
  const auto before = sample_process(t.pid);
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
  const auto held = sample_process(t.pid);
  r.ramp_server_cpu_seconds = held.cpu_seconds - before.cpu_seconds;
  std::this_thread::sleep_for(std::chrono::duration<double>(hold_seconds));
  const auto after = sample_process(t.pid);
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

awaitable<void> read_loop(load_peer& p, std::vector<step_counters>& steps,
                          std::vector<load_peer*>& dirty) {
  for (;;) {
    auto [ec, bytes] = co_await p.ws->read();
    if (ec) co_return;
    v1::Frame f;
    if (!f.ParseFromString(bytes)) continue;
    const auto step = f.request_id() == 0
                          ? current_step
                          : static_cast<std::size_t>(f.request_id() >> request_step_shift);
    switch (f.body_case()) {
      case v1::Frame::kSendResult:
        --p.in_flight;
        if (step < steps.size()) ++steps[step].stored;
        break;
      case v1::Frame::kError: {
        if (f.request_id() != 0) --p.in_flight;
        if (step < steps.size()) ++steps[step].errors;
        static bool reported = false;  // the first error says what went wrong; once per worker
        if (!reported) {
          reported = true;
          std::fprintf(stderr, "parley-bench: server error (request %llu): %s\n",
                       static_cast<unsigned long long>(f.request_id()),
                       f.error().message().c_str());
        }
        break;
      }
      case v1::Frame::kEnvelope: {
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
        if (p.acks.empty()) dirty.push_back(&p);
        p.acks.push_back(f.envelope().event_id());
        break;
      }
      case v1::Frame::kReceipt:
        if (p.acks.empty()) dirty.push_back(&p);
        p.acks.push_back(f.receipt().event_id());
        break;
      default:
        break;
    }
  }
}

// One Ack frame per peer that received something since the last call.
void flush_acks(std::vector<load_peer*>& dirty) {
  for (auto* d : dirty) d->flush_acks();
  dirty.clear();
}

awaitable<void> pace(std::vector<std::unique_ptr<load_peer>>& peers, std::size_t users,
                     const std::string& run, const std::vector<double>& rates, double step_seconds,
                     int procs, std::int64_t start_ns, std::vector<step_counters>& steps,
                     std::vector<load_peer*>& dirty) {
  std::mt19937_64 rng(static_cast<std::uint64_t>(::getpid()) * 7919u +
                      static_cast<std::uint64_t>(start_ns));
  std::uniform_int_distribution<std::size_t> pick_sender(0, peers.size() - 1);
  std::uniform_int_distribution<std::size_t> pick_user(0, users - 1);
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer tick(ex);
  v1::Frame frame;
  std::string payload(payload_bytes, 'x');
  std::uint64_t counter = 0;
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
        m->set_type(parley::v1::CIPHER_TYPE_SIGNAL_MESSAGE);
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

}  // namespace

one_to_one_result run_one_to_one(const target& t, std::size_t users,
                                 const std::vector<double>& rates, double step_seconds) {
  const std::string run = tag();
  worker_pool pool(t.procs, [&](int w, worker_channel& ch) -> int {
    asio::io_context io(1);
    auto peers = worker_share(io, users, t.procs, w, "u" + run + "_");
    const auto failed = run_on(io, set_up_all(peers, t.url, static_cast<std::size_t>(w), true, 64));
    if (failed != 0) throw std::runtime_error(std::to_string(failed) + " users failed to connect");
    ch.send("ready");
    const std::int64_t start = std::stoll(ch.receive());
    std::vector<step_counters> steps(rates.size());
    std::vector<load_peer*> dirty;
    for (auto& p : peers) asio::co_spawn(io, read_loop(*p, steps, dirty), asio::detached);
    run_on(io, pace(peers, users, run, rates, step_seconds, t.procs, start, steps, dirty));
    for (auto& s : steps) {
      std::ostringstream out;
      out << s.sent << ' ' << s.stored << ' ' << s.received << ' ' << s.errors << ' ' << s.skipped
          << ' ' << s.late_ticks << ' ' << cores_used(s.cpu_start, s.cpu_end) << ' '
          << s.latency.serialize();
      ch.send(out.str());
    }
    return 0;
  });
  pool.collect();  // ready

  one_to_one_result r;
  r.users = users;
  const std::int64_t start = now_ns() + 300'000'000;
  pool.broadcast(std::to_string(start));
  const auto step_ns = static_cast<std::int64_t>(step_seconds * 1e9);
  std::vector<std::pair<process_sample, process_sample>> server(rates.size());
  for (std::size_t k = 0; k < rates.size(); ++k) {
    sleep_until_ns(start + static_cast<std::int64_t>(k) * step_ns);
    server[k].first = sample_process(t.pid);
    sleep_until_ns(start + static_cast<std::int64_t>(k + 1) * step_ns);
    server[k].second = sample_process(t.pid);
  }
  for (std::size_t k = 0; k < rates.size(); ++k) {
    step_result s;
    s.offered_rate = rates[k];
    s.seconds = step_seconds;
    for (const auto& line : pool.collect()) {
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
      s.latency.merge(h);
      s.generator_cores = std::max(s.generator_cores, cores);
      s.generator_total_cores += cores;
      // Behind schedule for more than 5 % of the step, or a worker saturating its core.
      if (static_cast<double>(late) > step_seconds * 1000 * 0.05 || cores > 0.95)
        s.generator_bound = true;
    }
    s.lost = s.stored > s.received ? s.stored - s.received : 0;
    s.server_cores = cores_used(server[k].first, server[k].second);
    s.server_thread_cores = thread_cores_used(server[k].first, server[k].second);
    s.server_rss = server[k].second.rss_bytes;
    r.steps.push_back(std::move(s));
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
  if (!co_await set_up(sender, url, source_address(0), true))
    throw std::runtime_error("drain: sender set-up failed");
  if (!co_await set_up(receiver, url, source_address(1), true))
    throw std::runtime_error("drain: receiver set-up failed");
  co_await receiver.ws->close(std::chrono::seconds(2));

  // Queue `messages` for the offline receiver, 200 in flight.
  std::size_t sent = 0, stored = 0;
  std::string payload(payload_bytes, 'd');
  while (stored < messages) {
    while (sent < messages && sent - stored < 200) {
      v1::Frame f;
      f.set_request_id(++sent);
      auto* m = f.mutable_send_message();
      m->set_to(receiver.username);
      m->set_client_msg_id(std::to_string(sent));
      m->set_payload(payload);
      // The generator measures the server, which never looks inside a payload: its bytes are a
      // timestamp and filler, labelled as a SignalMessage as every real client payload is.
      m->set_type(parley::v1::CIPHER_TYPE_SIGNAL_MESSAGE);
      sender.send(f);
    }
    auto [ec, bytes] = co_await sender.ws->read();
    if (ec) throw std::runtime_error("drain: sender connection lost");
    v1::Frame f;
    if (!f.ParseFromString(bytes)) continue;
    if (f.has_error()) throw std::runtime_error("drain: send failed: " + f.error().message());
    if (f.has_send_result()) ++stored;
  }

  drain_result r;
  r.queued = messages;
  load_peer again(ex);
  again.device = receiver.device;
  again.token = receiver.token;
  const auto start = clock::now();
  if (co_await again.ws->connect(url, std::chrono::seconds(10), source_address(2)))
    throw std::runtime_error("drain: reconnect failed");
  v1::Frame auth;
  auth.set_request_id(1);
  auth.mutable_authenticate()->set_device_id(again.device);
  auth.mutable_authenticate()->set_token(again.token);
  again.send(auth);
  std::uint64_t last_seq = 0;
  r.in_order = true;
  while (r.received < messages) {
    auto [ec, bytes] = co_await again.ws->read();
    if (ec) break;
    v1::Frame f;
    if (!f.ParseFromString(bytes) || !f.has_envelope()) continue;
    if (f.envelope().seq() != last_seq + 1) r.in_order = false;
    last_seq = f.envelope().seq();
    ++r.received;
    again.acks.push_back(f.envelope().event_id());
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

// --- baseline: the raw echo ----------------------------------------------------------------------

baseline_result run_baseline(const target& t, std::size_t connections, int window, double seconds) {
  worker_pool pool(t.procs, [&](int w, worker_channel& ch) -> int {
    asio::io_context io(1);
    std::vector<std::shared_ptr<client::ws_connection>> conns;
    for (std::size_t i = static_cast<std::size_t>(w); i < connections;
         i += static_cast<std::size_t>(t.procs)) {
      conns.push_back(std::make_shared<client::ws_connection>(io.get_executor()));
      if (run_on(io, conns.back()->connect(t.url, std::chrono::seconds(10), source_address(i)))) {
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
  const auto s0 = sample_process(t.pid);
  sleep_until_ns(start + static_cast<std::int64_t>(seconds * 1e9));
  const auto s1 = sample_process(t.pid);
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
