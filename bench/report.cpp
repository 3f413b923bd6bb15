#include "report.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace parley::bench {
namespace {

std::string fixed(double v, int decimals = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string ms(std::uint64_t micros) { return fixed(static_cast<double>(micros) / 1000.0, 2); }

std::string mib(double bytes) { return fixed(bytes / (1024.0 * 1024.0), 1); }

std::string pad(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

std::string percentiles_json(const latency_histogram& h) {
  std::ostringstream o;
  o << "{\"count\": " << h.count() << ", \"p50_ms\": " << ms(h.percentile(0.5))
    << ", \"p90_ms\": " << ms(h.percentile(0.9)) << ", \"p99_ms\": " << ms(h.percentile(0.99))
    << ", \"p999_ms\": " << ms(h.percentile(0.999)) << ", \"max_ms\": " << ms(h.max()) << "}";
  return o.str();
}

double thread_cores(const step_result& s, const std::string& name) {
  const auto it = s.server_thread_cores.find(name);
  return it == s.server_thread_cores.end() ? 0 : it->second;
}

// Where each step's CPU time went, per message stored: parleyd by thread, and the generator,
// which shares the machine's cores with it.
void render_cpu_per_message(std::ostringstream& o, const one_to_one_result& t) {
  o << "  CPU time per message stored, µs (from /proc; this machine has "
    << std::thread::hardware_concurrency() << " cores)\n"
    << pad("offered/s", 10) << pad("server", 8) << pad("writer", 8) << pad("io", 8)
    << pad("other", 8) << pad("generator", 11) << pad("machine cores", 15) << "\n";
  for (const auto& s : t.steps) {
    const double writer = thread_cores(s, "store-writer");
    const double io = thread_cores(s, "parley-io");
    o << pad(fixed(s.offered_rate, 0), 10) << pad(fixed(s.cpu_us_per_message(s.server_cores), 0), 8)
      << pad(fixed(s.cpu_us_per_message(writer), 0), 8) << pad(fixed(s.cpu_us_per_message(io), 0), 8)
      << pad(fixed(s.cpu_us_per_message(std::max(0.0, s.server_cores - writer - io)), 0), 8)
      << pad(fixed(s.cpu_us_per_message(s.generator_total_cores), 0), 11)
      << pad(fixed(s.server_cores + s.generator_total_cores, 2), 15) << "\n";
  }
}

// The store's group commits in each step (parley_store_write_seconds deltas).
void render_store_commits(std::ostringstream& o, const one_to_one_result& t) {
  bool any = false;
  for (const auto& s : t.steps) any = any || s.store_commits.has_value();
  if (!any) return;
  o << "  store group commits (write + fsync) in each step, from parleyd's /metrics histogram\n"
    << "  parley_store_write_seconds: percentiles interpolated within its buckets; max <= is the\n"
    << "  upper bound of the highest bucket with a commit, not a measured maximum\n"
    << pad("offered/s", 10) << pad("commits/s", 11) << pad("writes/commit", 15) << pad("mean ms", 9)
    << pad("p50 ms", 9) << pad("p99 ms", 9) << pad("p99.9 ms", 10) << pad("max <= ms", 11) << "\n";
  for (const auto& s : t.steps) {
    o << pad(fixed(s.offered_rate, 0), 10);
    if (!s.store_commits) {
      o << "  (not scraped)\n";
      continue;
    }
    const auto& c = *s.store_commits;
    const double per_commit =
        c.commits > 0 ? static_cast<double>(c.writes) / static_cast<double>(c.commits) : 0;
    o << pad(fixed(s.seconds > 0 ? static_cast<double>(c.commits) / s.seconds : 0, 0), 11)
      << pad(fixed(per_commit, 1), 15) << pad(fixed(c.mean_ms, 2), 9) << pad(fixed(c.p50_ms, 2), 9)
      << pad(fixed(c.p99_ms, 2), 9) << pad(fixed(c.p999_ms, 2), 10)
      << pad(std::isinf(c.max_le_ms) ? std::string("+Inf") : fixed(c.max_le_ms, 2), 11) << "\n";
  }
}

std::string store_commits_json(const std::optional<store_commit_stats>& c, double seconds) {
  if (!c) return "null";
  std::ostringstream o;
  o << "{\"commits\": " << c->commits << ", \"writes\": " << c->writes
    << ", \"commits_per_second\": "
    << fixed(seconds > 0 ? static_cast<double>(c->commits) / seconds : 0, 1)
    << ", \"mean_ms\": " << fixed(c->mean_ms, 3) << ", \"p50_ms\": " << fixed(c->p50_ms, 3)
    << ", \"p99_ms\": " << fixed(c->p99_ms, 3) << ", \"p999_ms\": " << fixed(c->p999_ms, 3)
    // The +Inf bucket has no number: null.
    << ", \"max_le_ms\": " << (std::isinf(c->max_le_ms) ? "null" : fixed(c->max_le_ms, 3)) << "}";
  return o.str();
}

std::string login_json(const login_result& l) {
  const double n = l.logged_in > 0 ? static_cast<double>(l.logged_in) : 1;
  std::ostringstream o;
  o << "{\"wanted\": " << l.wanted << ", \"logged_in\": " << l.logged_in
    << ", \"failed\": " << l.failed << ", \"seconds\": " << fixed(l.seconds, 3)
    << ", \"logins_per_second\": " << fixed(l.logins_per_second, 0)
    << ", \"server_cpu_us_per_login\": " << fixed(l.server_cpu_seconds * 1e6 / n, 0)
    << ", \"generator_cpu_us_per_login\": " << fixed(l.generator_cpu_seconds * 1e6 / n, 0)
    << ", \"receipts\": " << l.receipts << ", \"drained\": " << l.drained
    << ", \"with_receipts_stamp\": " << l.with_stamp << "}";
  return o.str();
}

void render_login(std::ostringstream& o, const std::string& label, const login_result& l) {
  const double n = l.logged_in > 0 ? static_cast<double>(l.logged_in) : 1;
  o << label << fixed(l.logins_per_second, 0) << " logins/s (" << l.logged_in << " of " << l.wanted
    << ", " << l.failed << " failed, in " << fixed(l.seconds, 2) << " s)\n"
    << std::string(label.size(), ' ') << "per login: server CPU "
    << fixed(l.server_cpu_seconds * 1e6 / n, 0) << " µs, generator CPU "
    << fixed(l.generator_cpu_seconds * 1e6 / n, 0) << " µs, "
    << fixed(static_cast<double>(l.receipts) / n, 1) << " receipt watermarks, "
    << fixed(static_cast<double>(l.drained) / n, 1) << " drained envelopes\n"
    << std::string(label.size(), ' ') << l.receipts << " receipt watermarks in all; "
    << l.with_stamp << " of " << l.wanted << " logins presented a receipts stamp\n";
  if (l.round_rates.size() > 1) {
    o << std::string(label.size(), ' ') << "the median of " << l.round_rates.size()
      << " rounds; logins/s of each, in order:";
    for (double rate : l.round_rates) o << " " << fixed(rate, 0);
    o << "\n";
  }
  if (!l.server_thread_cpu_seconds.empty()) {
    o << std::string(label.size(), ' ') << "server CPU per login by thread, µs:";
    for (const auto& [name, seconds] : l.server_thread_cpu_seconds)
      o << " " << name << " " << fixed(seconds * 1e6 / n, 0);
    o << "\n";
  }
}

}  // namespace

std::string render_table(const run_report& r) {
  std::ostringstream o;
  o << "parley-bench " << r.mode << " run, " << r.started_at << ", " << r.procs
    << " generator processes, parleyd --threads " << r.server_threads
    << (r.fsync ? "" : " --no-fsync (diagnosis: acknowledged messages not on disk)") << "\n\n";
  if (r.baseline) {
    const auto& b = *r.baseline;
    o << "baseline: raw WebSocket echo (parleyd's own WebSocket stack), " << b.connections
      << " connections, " << fixed(b.seconds, 1) << " s\n"
      << "  round trips/s " << fixed(b.rate, 0) << "   p50 " << ms(b.latency.percentile(0.5))
      << " ms   p99 " << ms(b.latency.percentile(0.99)) << " ms   server CPU "
      << fixed(b.server_cores, 2) << " cores\n";
    if (b.round_trips > 0) {
      const double per_trip = b.seconds * 1e6 / static_cast<double>(b.round_trips);
      o << "  CPU time per round trip: server " << fixed(b.server_cores * per_trip, 1)
        << " µs, generator " << fixed(b.generator_cores * per_trip, 1) << " µs\n";
    }
    o << "\n";
  }
  if (r.connect) {
    const auto& c = *r.connect;
    o << "connect: " << c.connected << " of " << c.wanted << " authenticated connections ("
      << c.failed << " failed) in " << fixed(c.seconds, 2)
      << " s = " << fixed(c.connects_per_second, 0) << " connects/s\n"
      << "  server RSS " << mib(static_cast<double>(c.rss_before)) << " -> "
      << mib(static_cast<double>(c.rss_after))
      << " MiB = " << fixed(c.rss_per_connection / 1024.0, 2) << " KiB per connection; idle CPU "
      << fixed(c.idle_server_cores, 3) << " cores\n";
    if (c.connected > 0 && c.seconds > 0) {
      const double n = static_cast<double>(c.connected);
      o << "  CPU time per connection during the ramp: server "
        << fixed(c.ramp_server_cpu_seconds * 1e6 / n, 0) << " µs, generator "
        << fixed(c.ramp_generator_cpu_seconds * 1e6 / n, 0) << " µs ("
        << fixed((c.ramp_server_cpu_seconds + c.ramp_generator_cpu_seconds) / c.seconds, 2)
        << " cores busy)\n";
    }
    o << "\n";
  }
  if (r.one_to_one) {
    const auto& t = *r.one_to_one;
    o << "one-to-one: " << t.users << " online users, 100-byte messages to random users\n"
      << pad("offered/s", 10) << pad("delivered/s", 12) << pad("p50 ms", 9) << pad("p90 ms", 9)
      << pad("p99 ms", 9) << pad("p99.9 ms", 10) << pad("max ms", 9) << pad("lost", 6)
      << pad("errors", 7) << pad("skipped", 8) << pad("srv CPU", 8) << pad("srv MiB", 8)
      << "  generator\n";
    for (const auto& s : t.steps) {
      o << pad(fixed(s.offered_rate, 0), 10) << pad(fixed(s.delivered_rate(), 0), 12)
        << pad(ms(s.latency.percentile(0.5)), 9) << pad(ms(s.latency.percentile(0.9)), 9)
        << pad(ms(s.latency.percentile(0.99)), 9) << pad(ms(s.latency.percentile(0.999)), 10)
        << pad(ms(s.latency.max()), 9) << pad(std::to_string(s.lost), 6)
        << pad(std::to_string(s.errors), 7) << pad(std::to_string(s.skipped), 8)
        << pad(fixed(s.server_cores, 2), 8) << pad(mib(static_cast<double>(s.server_rss)), 8)
        << "  " << (s.generator_bound ? "BOUND" : "ok") << " (" << fixed(s.generator_cores, 2)
        << ")\n";
    }
    o << "  sustainable (p99 < 100 ms, nothing lost): " << fixed(t.sustainable_rate, 0) << " msg/s";
    if (r.baseline && r.baseline->rate > 0) {
      o << " = " << fixed(100.0 * t.sustainable_rate / r.baseline->rate, 1)
        << " % of the echo round-trip rate";
    }
    o << "\n";
    render_cpu_per_message(o, t);
    render_store_commits(o, t);
    o << "\n";
    if (t.logins_fresh && t.logins_after_load) {
      o << "logins-after-load: the " << t.users
        << " one-to-one users log in all at once (connect, authenticate, read to\n"
        << "  QueueEmpty) on the fresh server just after registering, and again after the load\n"
        << "  (every connection dropped at once, 2 s, then all back, each presenting the receipts\n"
        << "  stamp its device kept: only the watermarks that moved after it are due); each set\n"
        << "  in 5 rounds of all users dropped and back, reported by its median round\n";
      render_login(o, "  fresh server:   ", *t.logins_fresh);
      render_login(o, "  after the load: ", *t.logins_after_load);
      o << "  after / fresh: " << fixed(t.login_ratio(), 3) << "\n\n";
    }
  }
  if (r.drain) {
    const auto& d = *r.drain;
    o << "drain: " << d.received << " of " << d.queued << " queued messages delivered in "
      << fixed(d.milliseconds, 1) << " ms after connect, "
      << (d.in_order ? "in order" : "OUT OF ORDER") << "\n";
  }
  return o.str();
}

std::string render_json(const run_report& r) {
  std::ostringstream o;
  o << "{\n  \"started_at\": \"" << r.started_at << "\",\n  \"mode\": \"" << r.mode
    << "\",\n  \"generator_procs\": " << r.procs << ",\n  \"server_threads\": " << r.server_threads;
  if (r.baseline) {
    const auto& b = *r.baseline;
    o << ",\n  \"baseline\": {\"connections\": " << b.connections << ", \"seconds\": " << b.seconds
      << ", \"round_trips\": " << b.round_trips
      << ", \"round_trips_per_second\": " << fixed(b.rate, 0)
      << ", \"server_cores\": " << fixed(b.server_cores, 3)
      << ", \"generator_cores\": " << fixed(b.generator_cores, 3)
      << ", \"latency\": " << percentiles_json(b.latency) << "}";
  }
  if (r.connect) {
    const auto& c = *r.connect;
    o << ",\n  \"connect\": {\"wanted\": " << c.wanted << ", \"connected\": " << c.connected
      << ", \"failed\": " << c.failed << ", \"seconds\": " << fixed(c.seconds, 3)
      << ", \"connects_per_second\": " << fixed(c.connects_per_second, 0)
      << ", \"server_rss_before\": " << c.rss_before << ", \"server_rss_after\": " << c.rss_after
      << ", \"rss_bytes_per_connection\": " << fixed(c.rss_per_connection, 0)
      << ", \"idle_server_cores\": " << fixed(c.idle_server_cores, 3)
      << ", \"ramp_server_cpu_seconds\": " << fixed(c.ramp_server_cpu_seconds, 3)
      << ", \"ramp_generator_cpu_seconds\": " << fixed(c.ramp_generator_cpu_seconds, 3) << "}";
  }
  if (r.one_to_one) {
    const auto& t = *r.one_to_one;
    o << ",\n  \"one_to_one\": {\"users\": " << t.users
      << ", \"sustainable_rate\": " << fixed(t.sustainable_rate, 0);
    if (r.baseline && r.baseline->rate > 0) {
      o << ", \"ratio_to_echo\": " << fixed(t.sustainable_rate / r.baseline->rate, 4);
    }
    o << ", \"steps\": [";
    for (std::size_t i = 0; i < t.steps.size(); ++i) {
      const auto& s = t.steps[i];
      o << (i ? ",\n" : "\n") << "    {\"offered_rate\": " << fixed(s.offered_rate, 0)
        << ", \"seconds\": " << s.seconds << ", \"sent\": " << s.sent
        << ", \"stored\": " << s.stored << ", \"received\": " << s.received
        << ", \"delivered_rate\": " << fixed(s.delivered_rate(), 0) << ", \"lost\": " << s.lost
        << ", \"errors\": " << s.errors << ", \"skipped\": " << s.skipped
        << ", \"server_cores\": " << fixed(s.server_cores, 3)
        << ", \"server_rss\": " << s.server_rss
        << ", \"server_thread_cores\": {";
      bool first = true;
      for (const auto& [name, cores] : s.server_thread_cores) {
        o << (first ? "" : ", ") << '"' << name << "\": " << fixed(cores, 3);
        first = false;
      }
      o << "}, \"generator_cores\": " << fixed(s.generator_cores, 3)
        << ", \"generator_total_cores\": " << fixed(s.generator_total_cores, 3)
        << ", \"generator_bound\": " << (s.generator_bound ? "true" : "false")
        << ", \"latency\": " << percentiles_json(s.latency)
        << ", \"store_commits\": " << store_commits_json(s.store_commits, s.seconds) << "}";
    }
    o << "]}";
    if (t.logins_fresh && t.logins_after_load) {
      o << ",\n  \"logins_after_load\": {\"users\": " << t.users
        << ", \"fresh\": " << login_json(*t.logins_fresh)
        << ", \"after_load\": " << login_json(*t.logins_after_load)
        << ", \"ratio_after_to_fresh\": " << fixed(t.login_ratio(), 4) << "}";
    }
  }
  if (r.drain) {
    const auto& d = *r.drain;
    o << ",\n  \"drain\": {\"queued\": " << d.queued << ", \"received\": " << d.received
      << ", \"in_order\": " << (d.in_order ? "true" : "false")
      << ", \"milliseconds\": " << fixed(d.milliseconds, 2) << "}";
  }
  o << "\n}\n";
  return o.str();
}

std::string write_results(const run_report& r, const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::string stamp = r.started_at;
  for (char& c : stamp) {
    if (c == ':') c = '-';
  }
  std::ostringstream written;
  const std::string json = render_json(r);
  for (const auto& name : {stamp + "-" + r.mode + ".json", std::string("latest.json")}) {
    std::ofstream(dir / name) << json;
    written << (dir / name).string() << '\n';
  }
  if (!r.one_to_one || r.one_to_one->steps.empty()) return written.str();
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) return written.str();

  const auto data = dir / "latest-one-to-one.dat";
  {
    std::ofstream d(data);
    d << "# offered p50 p90 p99 p99.9 max (ms)\n";
    for (const auto& s : r.one_to_one->steps) {
      if (s.latency.count() == 0) continue;
      d << fixed(s.offered_rate, 0) << ' ' << ms(s.latency.percentile(0.5)) << ' '
        << ms(s.latency.percentile(0.9)) << ' ' << ms(s.latency.percentile(0.99)) << ' '
        << ms(s.latency.percentile(0.999)) << ' ' << ms(s.latency.max()) << '\n';
    }
  }
  const auto png = dir / (stamp + "-" + r.mode + "-one-to-one.png");
  const auto script = dir / "latest-one-to-one.gp";
  {
    std::ofstream g(script);
    g << "set terminal png size 900,560\n"
      << "set output '" << png.string() << "'\n"
      << "set title 'parleyd one-to-one: latency percentiles vs offered rate (" << r.started_at
      << ")'\n"
      << "set xlabel 'offered messages/s'\nset ylabel 'send -> receive latency (ms)'\n"
      << "set logscale xy\nset grid\nset key bottom right\n"
      << "plot '" << data.string() << "' using 1:2 with linespoints title 'p50', "
      << "'' using 1:3 with linespoints title 'p90', '' using 1:4 with linespoints title 'p99', "
      << "'' using 1:5 with linespoints title 'p99.9', '' using 1:6 with linespoints title 'max'\n";
  }
  const std::string cmd = "gnuplot '" + script.string() + "'";
  if (std::system(cmd.c_str()) == 0) {
    std::filesystem::copy_file(png, dir / "latest-one-to-one.png",
                               std::filesystem::copy_options::overwrite_existing);
    written << png.string() << '\n' << (dir / "latest-one-to-one.png").string() << '\n';
  }
  return written.str();
}

}  // namespace parley::bench
