#include "report.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

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
void render_store_commits(std::ostringstream& o, const std::vector<const step_result*>& steps) {
  bool any = false;
  for (const auto* s : steps) any = any || s->store_commits.has_value();
  if (!any) return;
  o << "  store group commits (write + fsync) in each step, from parleyd's /metrics histogram\n"
    << "  parley_store_write_seconds: percentiles interpolated within its buckets; max <= is the\n"
    << "  upper bound of the highest bucket with a commit, not a measured maximum\n"
    << pad("offered/s", 10) << pad("commits/s", 11) << pad("writes/commit", 15) << pad("mean ms", 9)
    << pad("p50 ms", 9) << pad("p99 ms", 9) << pad("p99.9 ms", 10) << pad("max <= ms", 11) << "\n";
  for (const auto* step : steps) {
    const auto& s = *step;
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

// parleyd's CPU by thread name, in cores: {"parley-io": 0.512, ...}.
std::string thread_cores_json(const std::map<std::string, double>& cores);

// One step of one-to-one (and of media's one-to-one steps).
std::string one_to_one_step_json(const step_result& s) {
  std::ostringstream o;
  o << "{\"offered_rate\": " << fixed(s.offered_rate, 0) << ", \"seconds\": " << s.seconds
    << ", \"sent\": " << s.sent << ", \"stored\": " << s.stored << ", \"received\": " << s.received
    << ", \"delivered_rate\": " << fixed(s.delivered_rate(), 0) << ", \"lost\": " << s.lost
    << ", \"errors\": " << s.errors << ", \"skipped\": " << s.skipped
    << ", \"server_cores\": " << fixed(s.server_cores, 3) << ", \"server_rss\": " << s.server_rss
    << ", \"server_thread_cores\": " << thread_cores_json(s.server_thread_cores)
    << ", \"generator_cores\": " << fixed(s.generator_cores, 3)
    << ", \"generator_total_cores\": " << fixed(s.generator_total_cores, 3)
    << ", \"generator_bound\": " << (s.generator_bound ? "true" : "false")
    << ", \"latency\": " << percentiles_json(s.latency)
    << ", \"store_commits\": " << store_commits_json(s.store_commits, s.seconds) << "}";
  return o.str();
}

// parleyd's CPU by thread name, in cores: {"parley-io": 0.512, ...}.
std::string thread_cores_json(const std::map<std::string, double>& cores) {
  std::ostringstream o;
  o << '{';
  bool first = true;
  for (const auto& [name, c] : cores) {
    o << (first ? "" : ", ") << '"' << name << "\": " << fixed(c, 3);
    first = false;
  }
  o << '}';
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

// The server's CPU per login of a round, in µs.
double server_us_per_login(const login_result& l) {
  return l.server_cpu_seconds * 1e6 / static_cast<double>(std::max<std::size_t>(l.logged_in, 1));
}

void render_login(std::ostringstream& o, const std::string& label, const login_result& l) {
  const double n = l.logged_in > 0 ? static_cast<double>(l.logged_in) : 1;
  o << label << fixed(l.logins_per_second, 0) << " logins/s (" << l.logged_in << " of " << l.wanted
    << ", " << l.failed << " failed, in " << fixed(l.seconds, 2) << " s)\n"
    << std::string(label.size(), ' ') << "per login: server CPU "
    << fixed(server_us_per_login(l), 0) << " µs, generator CPU "
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

// The fanout scenario: what the last recipient of each message saw, the delivery rate, losses,
// and what parleyd spent on it.
void render_fanout(std::ostringstream& o, const fanout_result& f) {
  o << "fanout: one group of " << f.group_size << " members, all online; one of them sends\n"
    << "  100-byte messages to it (" << f.recipients << " recipients each)\n"
    << "  last = per message, the receive time of the last recipient to get it - its send time;\n"
    << "  each = every delivery's; lost = stored (✓) but missing at a recipient at the end of\n"
    << "  its step + " << fixed(f.grace_seconds, 1)
    << " s (late: deliveries after that); deliveries/s: received within the step\n"
    << "  CreateGroup " << fixed(f.create_ms, 2) << " ms; the other " << f.recipients
    << " members logged in and had\n  its creation event in " << fixed(f.join_seconds, 2)
    << " s; server RSS " << mib(static_cast<double>(f.server_rss_before))
    << " MiB before the load\n"
    << pad("offered/s", 10) << pad("deliveries/s", 14) << pad("last p50", 10) << pad("last p99", 10)
    << pad("last p99.9", 12) << pad("last max", 10) << pad("each p50", 10) << pad("each p99", 10)
    << pad("lost", 6) << pad("late", 8) << pad("errors", 7) << pad("skipped", 8) << "\n";
  std::uint64_t duplicates = 0;
  const fanout_step_result* lowest = nullptr;  // the lowest rate's step
  const fanout_step_result* peak = nullptr;    // the step with the highest RSS
  for (const auto& s : f.steps) {
    const auto& l = s.load;
    o << pad(fixed(l.offered_rate, 0), 10) << pad(fixed(s.deliveries_per_second(), 0), 14)
      << pad(ms(s.last_member.percentile(0.5)), 10) << pad(ms(s.last_member.percentile(0.99)), 10)
      << pad(ms(s.last_member.percentile(0.999)), 12) << pad(ms(s.last_member.max()), 10)
      << pad(ms(l.latency.percentile(0.5)), 10) << pad(ms(l.latency.percentile(0.99)), 10)
      << pad(std::to_string(l.lost), 6) << pad(std::to_string(s.late), 8)
      << pad(std::to_string(l.errors), 7) << pad(std::to_string(l.skipped), 8) << "\n";
    duplicates += s.duplicates;
    if (!lowest || l.offered_rate < lowest->load.offered_rate) lowest = &s;
    if (!peak || s.server_rss_peak > peak->server_rss_peak) peak = &s;
  }
  if (lowest) {
    o << "  last member p99 at " << fixed(lowest->load.offered_rate, 0)
      << " msg/s: " << ms(lowest->last_member.percentile(0.99)) << " ms (issue 14: <= 20 ms)\n";
  }
  o << "  sustainable (last member p99 < 100 ms, nothing lost, refused or skipped): "
    << fixed(f.sustainable_rate, 0)
    << " msg/s\n    = " << fixed(f.sustained_deliveries_per_second, 0)
    << " recipient deliveries/s in that step (issue 14: >= 200,000)\n";
  if (peak) {
    o << "  server RSS peak " << mib(static_cast<double>(peak->server_rss_peak)) << " MiB (at "
      << fixed(peak->load.offered_rate, 0) << " msg/s), "
      << mib(static_cast<double>(f.server_rss_before)) << " MiB before the load\n";
  }
  if (f.disconnected > 0) {
    o << "  DISCONNECTED: " << f.disconnected
      << " members' connections ended during the run (their later messages count as lost)\n";
  }
  if (duplicates > 0) {
    o << "  DUPLICATES: " << duplicates
      << " envelopes at or below a seq their recipient already had (not counted as received)\n";
  }
  o << "  parleyd's CPU by thread (cores); CPU time per delivery received in the step, µs, of\n"
    << "  parleyd (srv/dlv) and the generator (gen/dlv); parleyd's RSS at the step's end and its\n"
    << "  peak over the step (read every 100 ms)\n"
    << pad("offered/s", 10) << pad("server", 8) << pad("writer", 8) << pad("io", 8)
    << pad("other", 8) << pad("srv/dlv", 10) << pad("gen/dlv", 10) << pad("srv MiB", 9)
    << pad("peak MiB", 10) << "  generator\n";
  for (const auto& s : f.steps) {
    const auto& l = s.load;
    const double writer = thread_cores(l, "store-writer");
    const double io = thread_cores(l, "parley-io");
    o << pad(fixed(l.offered_rate, 0), 10) << pad(fixed(l.server_cores, 2), 8)
      << pad(fixed(writer, 2), 8) << pad(fixed(io, 2), 8)
      << pad(fixed(std::max(0.0, l.server_cores - writer - io), 2), 8)
      << pad(fixed(s.cpu_us_per_delivery(l.server_cores), 2), 10)
      << pad(fixed(s.cpu_us_per_delivery(l.generator_total_cores), 2), 10)
      << pad(mib(static_cast<double>(l.server_rss)), 9)
      << pad(mib(static_cast<double>(s.server_rss_peak)), 10) << "  "
      << (l.generator_bound ? "BOUND" : "ok") << " (" << fixed(l.generator_cores, 2) << ")\n";
  }
  std::vector<const step_result*> loads;
  for (const auto& s : f.steps) loads.push_back(&s.load);
  render_store_commits(o, loads);
}

// --- media ------------------------------------------------------------------------------------

// MB as the media targets state them: 10^6 bytes.
std::string mb(double bytes, int decimals = 1) { return fixed(bytes / 1e6, decimals); }

// A JSON string: quotes, backslashes and control characters escaped.
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + '"';
}

// One of issue 15's targets next to what the media scenario measured.
struct media_target {
  std::string what, target, measured;
  std::string verdict;  // "met", "missed", "figure only" or "not run"
};

std::string verdict(bool ran, bool met) { return !ran ? "not run" : met ? "met" : "missed"; }

std::vector<media_target> media_targets(const media_result& m) {
  std::vector<media_target> out;
  const std::string big = mb(static_cast<double>(m.file_bytes), 0) + " MB";
  auto rate = [&](const std::string& what, const media_transfer& t, bool judged) {
    const std::string measured = !t.ran ? "-" : t.ok ? fixed(t.mb_per_second(), 1) + " MB/s"
                                                     : "failed";
    out.push_back({what, judged ? ">= 300 MB/s" : "-", measured,
                   judged ? verdict(t.ran, t.ok && t.mb_per_second() >= 300)
                   : !t.ran ? "not run"
                   : t.ok   ? "figure only"
                            : "failed"});
  };
  rate("upload of " + big + " through the local store", m.upload, true);
  rate("download of " + big + " through the local store", m.download, true);
  if (m.s3_store.empty()) {
    out.push_back({"upload and download of " + big + " through S3", "figure only",
                   "not measured (no --media-s3)", "not run"});
  } else {
    rate("upload of " + big + " through S3 (" + m.s3_store + ")", m.s3_upload, false);
    rate("download of " + big + " through S3", m.s3_download, false);
    rate("upload of " + big + " through S3 in one PUT", m.s3_upload_one_put, false);
  }
  auto rss = [&](const std::string& what, const media_transfer& t) {
    out.push_back({"parleyd RSS growth during the " + what + " of " + big, "<= 32 MB",
                   t.ran ? mb(t.rss_growth()) + " MB" : "-",
                   verdict(t.ran, t.rss_growth() <= 32e6)});
  };
  rss("upload", m.upload);
  rss("download", m.download);
  const auto& c = m.concurrent;
  out.push_back({std::to_string(c.uploads) + " concurrent uploads of " +
                     mb(static_cast<double>(m.small_bytes), 0) + " MB: failed",
                 "0", std::to_string(c.failed()), verdict(c.uploads > 0, c.failed() == 0)});
  const auto& steps = m.one_to_one.steps;
  const bool both = steps.size() == 2 && m.p99_ratio() > 0;
  out.push_back({"1:1 p99 at " + fixed(m.rate, 0) + " msg/s with transfers / without", "<= 2",
                 both ? fixed(m.p99_ratio(), 2) + " (" + ms(steps[1].latency.percentile(0.99)) +
                            " / " + ms(steps[0].latency.percentile(0.99)) + " ms)"
                      : "-",
                 verdict(both, m.p99_ratio() <= 2)});
  return out;
}

void render_media_transfer(std::ostringstream& o, const std::string& label,
                           const media_transfer& t) {
  o << "  " << label << std::string(label.size() < 18 ? 18 - label.size() : 1, ' ');
  if (!t.ran) {
    o << "not run\n";
    return;
  }
  o << pad(t.ok ? fixed(t.mb_per_second(), 1) : std::string("-"), 8) << pad(fixed(t.seconds, 3), 9)
    << pad(mib(static_cast<double>(t.server_rss_before)), 13) << pad(mb(t.rss_growth()), 11)
    << pad(fixed(t.server_cores, 2), 9) << pad(fixed(t.blob_io_cores, 2), 9) << "  "
    << (t.ok ? "ok" : "FAILED: " + t.error) << "\n";
}

// A one-to-one step of the media scenario, as a row of the one-to-one table.
void render_media_step(std::ostringstream& o, const std::string& label, const step_result& s) {
  const auto blob = s.server_thread_cores.find("blob-io");
  o << pad(label, 10) << pad(fixed(s.delivered_rate(), 0), 12) << pad(ms(s.latency.percentile(0.5)), 9)
    << pad(ms(s.latency.percentile(0.9)), 9) << pad(ms(s.latency.percentile(0.99)), 9)
    << pad(ms(s.latency.percentile(0.999)), 10) << pad(ms(s.latency.max()), 9)
    << pad(std::to_string(s.lost), 6) << pad(std::to_string(s.errors), 7)
    << pad(std::to_string(s.skipped), 8) << pad(fixed(s.server_cores, 2), 8)
    << pad(fixed(blob == s.server_thread_cores.end() ? 0 : blob->second, 2), 8)
    << pad(mib(static_cast<double>(s.server_rss)), 8) << "  "
    << (s.generator_bound ? "BOUND" : "ok") << " (" << fixed(s.generator_cores, 2) << ")\n";
}

void render_media(std::ostringstream& o, const media_result& m) {
  const double plain = static_cast<double>(m.file_bytes);
  o << "media: files through parleyd's blob store (its local disk, its own port) on loopback;\n"
    << "  MB = 10^6 bytes; what moves is the ciphertext of random bytes (chunked AES-256-GCM)\n"
    << "  files: " << m.file_bytes << " B (ciphertext " << m.file_cipher_bytes << " B) and "
    << m.small_bytes << " B (ciphertext " << m.small_cipher_bytes << " B)\n"
    << "  client, one thread of this process (MB of plaintext/s, writing and fsyncing the output\n"
    << "  included): encrypt "
    << fixed(m.encrypt_seconds > 0 ? plain / m.encrypt_seconds / 1e6 : 0, 1)
    << " MB/s, decrypt and verify the download "
    << (m.decrypt_seconds > 0 ? fixed(plain / m.decrypt_seconds / 1e6, 1) + " MB/s" : "-")
    << "; the download decrypted to the original: " << (m.decrypted_matches ? "yes" : "NO")
    << "\n"
    << "  parleyd's RSS just before each transfer, its growth (peak, read every 100 ms, minus\n"
    << "  that), its CPU over the transfer, all threads and its blob server's (blob-io), cores\n"
    << "  transfer" << std::string(10, ' ') << pad("MB/s", 8) << pad("seconds", 9)
    << pad("srv RSS MiB", 13) << pad("growth MB", 11) << pad("srv CPU", 9) << pad("blob-io", 9)
    << "\n";
  const std::string big = mb(plain, 0) + " MB";
  render_media_transfer(o, "upload " + big, m.upload);
  render_media_transfer(o, "download " + big, m.download);
  if (!m.s3_store.empty()) {
    o << "  through a parleyd whose blob store is S3-compatible, " << m.s3_store << ":\n";
    render_media_transfer(o, "S3 upload", m.s3_upload);
    render_media_transfer(o, "S3 download", m.s3_download);
    render_media_transfer(o, "S3 one PUT", m.s3_upload_one_put);
  }
  const auto& c = m.concurrent;
  o << "  " << c.uploads << " concurrent uploads of " << mb(static_cast<double>(m.small_bytes), 0)
    << " MB, each to its own slot: " << c.stored << " stored, " << c.failed() << " failed; "
    << fixed(c.mb_per_second(), 1) << " MB/s in all ("
    << mb(static_cast<double>(c.stored * c.bytes_each)) << " MB in " << fixed(c.seconds, 3)
    << " s)\n    per upload p50 " << fixed(c.p50_seconds, 3) << " s, max "
    << fixed(c.max_seconds, 3) << " s; parleyd RSS growth "
    << mb(c.server_rss_peak > c.server_rss_before
              ? static_cast<double>(c.server_rss_peak - c.server_rss_before)
              : 0)
    << " MB, CPU " << fixed(c.server_cores, 2) << " cores\n";
  for (const auto& e : c.errors) o << "    FAILED: " << e << "\n";
  const auto& steps = m.one_to_one.steps;
  o << "  one-to-one at " << fixed(m.rate, 0) << " msg/s, " << m.one_to_one.users
    << " online users, 100-byte messages to random users: a step without transfers, then one\n"
    << "  with uploads and downloads running in a loop (below)\n"
    << pad("transfers", 10) << pad("delivered/s", 12) << pad("p50 ms", 9) << pad("p90 ms", 9)
    << pad("p99 ms", 9) << pad("p99.9 ms", 10) << pad("max ms", 9) << pad("lost", 6)
    << pad("errors", 7) << pad("skipped", 8) << pad("srv CPU", 8) << pad("blob-io", 8)
    << pad("srv MiB", 8) << "  generator\n";
  if (steps.size() > 0) render_media_step(o, "none", steps[0]);
  if (steps.size() > 1) render_media_step(o, "running", steps[1]);
  const auto& b = m.background;
  o << "  during the second step: " << b.uploads << " uploads of "
    << mb(static_cast<double>(m.small_bytes), 0) << " MB (of " << b.upload_slots
    << " slots granted before), " << b.small_downloads << " downloads of "
    << mb(static_cast<double>(m.small_bytes), 0) << " MB, " << b.big_downloads
    << " downloads of " << big << ";\n    " << mb(static_cast<double>(b.bytes)) << " MB in "
    << fixed(b.seconds, 2) << " s = " << fixed(b.mb_per_second(), 1) << " MB/s, " << b.failed
    << " failed; parleyd RSS " << mib(static_cast<double>(b.server_rss_before)) << " MiB at the start, peak "
    << mib(static_cast<double>(b.server_rss_peak)) << " MiB\n";
  for (const auto& e : b.errors) o << "    FAILED: " << e << "\n";
  for (const auto& e : m.errors) o << "  ERROR: " << e << "\n";
  o << "  issue 15 targets\n";
  for (const auto& t : media_targets(m)) {
    o << "    " << t.what << ": " << t.measured << " (target " << t.target << "): " << t.verdict
      << "\n";
  }
}

std::string media_transfer_json(const media_transfer& t) {
  std::ostringstream o;
  o << "{\"ran\": " << (t.ran ? "true" : "false") << ", \"ok\": " << (t.ok ? "true" : "false")
    << ", \"error\": " << json_string(t.error) << ", \"bytes\": " << t.bytes
    << ", \"seconds\": " << fixed(t.seconds, 4)
    << ", \"mb_per_second\": " << fixed(t.mb_per_second(), 1)
    << ", \"server_rss_before\": " << t.server_rss_before
    << ", \"server_rss_peak\": " << t.server_rss_peak
    << ", \"server_rss_growth_mb\": " << mb(t.rss_growth(), 2)
    << ", \"server_cores\": " << fixed(t.server_cores, 3)
    << ", \"blob_io_cores\": " << fixed(t.blob_io_cores, 3) << "}";
  return o.str();
}

std::string strings_json(const std::vector<std::string>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + json_string(v[i]);
  return out + "]";
}

std::string media_json(const media_result& m) {
  const double plain = static_cast<double>(m.file_bytes);
  const auto& c = m.concurrent;
  const auto& b = m.background;
  std::ostringstream o;
  o << "{\"file_bytes\": " << m.file_bytes << ", \"file_cipher_bytes\": " << m.file_cipher_bytes
    << ", \"small_bytes\": " << m.small_bytes
    << ", \"small_cipher_bytes\": " << m.small_cipher_bytes
    << ",\n    \"client\": {\"encrypt_seconds\": " << fixed(m.encrypt_seconds, 4)
    << ", \"encrypt_mb_per_second\": "
    << fixed(m.encrypt_seconds > 0 ? plain / m.encrypt_seconds / 1e6 : 0, 1)
    << ", \"decrypt_seconds\": " << fixed(m.decrypt_seconds, 4) << ", \"decrypt_mb_per_second\": "
    << fixed(m.decrypt_seconds > 0 ? plain / m.decrypt_seconds / 1e6 : 0, 1)
    << ", \"decrypted_matches\": " << (m.decrypted_matches ? "true" : "false") << "}"
    << ",\n    \"upload\": " << media_transfer_json(m.upload)
    << ",\n    \"download\": " << media_transfer_json(m.download)
    << ",\n    \"concurrent\": {\"uploads\": " << c.uploads << ", \"stored\": " << c.stored
    << ", \"failed\": " << c.failed() << ", \"bytes_each\": " << c.bytes_each
    << ", \"seconds\": " << fixed(c.seconds, 4)
    << ", \"mb_per_second\": " << fixed(c.mb_per_second(), 1)
    << ", \"p50_seconds\": " << fixed(c.p50_seconds, 4)
    << ", \"max_seconds\": " << fixed(c.max_seconds, 4)
    << ", \"server_rss_before\": " << c.server_rss_before
    << ", \"server_rss_peak\": " << c.server_rss_peak
    << ", \"server_cores\": " << fixed(c.server_cores, 3)
    << ", \"errors\": " << strings_json(c.errors) << "}"
    << ",\n    \"one_to_one\": {\"rate\": " << fixed(m.rate, 0)
    << ", \"users\": " << m.one_to_one.users << ", \"without_transfers\": "
    << (m.one_to_one.steps.size() > 0 ? one_to_one_step_json(m.one_to_one.steps[0]) : "null")
    << ",\n      \"with_transfers\": "
    << (m.one_to_one.steps.size() > 1 ? one_to_one_step_json(m.one_to_one.steps[1]) : "null")
    << ",\n      \"p99_ratio\": " << fixed(m.p99_ratio(), 3) << "}"
    << ",\n    \"background\": {\"upload_slots\": " << b.upload_slots
    << ", \"uploads\": " << b.uploads << ", \"small_downloads\": " << b.small_downloads
    << ", \"big_downloads\": " << b.big_downloads << ", \"failed\": " << b.failed
    << ", \"bytes\": " << b.bytes << ", \"seconds\": " << fixed(b.seconds, 3)
    << ", \"mb_per_second\": " << fixed(b.mb_per_second(), 1)
    << ", \"server_rss_before\": " << b.server_rss_before
    << ", \"server_rss_peak\": " << b.server_rss_peak
    << ", \"errors\": " << strings_json(b.errors) << "}"
    << ",\n    \"s3\": ";
  if (m.s3_store.empty()) {
    o << "null";
  } else {
    o << "{\"store\": " << json_string(m.s3_store)
      << ", \"upload\": " << media_transfer_json(m.s3_upload)
      << ", \"download\": " << media_transfer_json(m.s3_download)
      << ", \"upload_one_put\": " << media_transfer_json(m.s3_upload_one_put) << "}";
  }
  o << ",\n    \"errors\": " << strings_json(m.errors)
    << ", \"nothing_failed\": " << (m.nothing_failed() ? "true" : "false")
    << ",\n    \"targets\": [";
  const auto targets = media_targets(m);
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    o << (i ? ",\n" : "\n") << "      {\"what\": " << json_string(t.what)
      << ", \"target\": " << json_string(t.target) << ", \"measured\": " << json_string(t.measured)
      << ", \"verdict\": " << json_string(t.verdict) << "}";
  }
  o << "]}";
  return o.str();
}

}  // namespace

namespace {

// A window's pushes of the cluster scenario, after `lead`; nothing if its counts are none.
void render_pushes(std::ostringstream& o, const std::string& lead, const push_counts& c) {
  if (!c.checks || !c.gaps) return;
  const double received = static_cast<double>(std::max<std::uint64_t>(c.received, 1));
  o << lead << c.received << " received, " << *c.checks
    << " first pushes checked with a cursor read ("
    << fixed(100.0 * static_cast<double>(*c.checks) / received, 1) << " % of received), " << *c.gaps
    << " gaps read from the log\n";
}

// Per node count: connections held, the one-to-one ladder's sustainable rate and p99 per
// step, the fanout's, and the store's work.
void render_cluster(std::ostringstream& o, const cluster_result& c) {
  o << "cluster: PostgreSQL + Redis + N parleyd nodes on this machine, connections and users "
       "spread evenly over the nodes\n";
  for (const auto& p : c.points) {
    o << "  " << p.nodes << (p.nodes == 1 ? " node" : " nodes") << ":\n";
    if (p.connect) {
      const auto& k = *p.connect;
      o << "    connect: " << k.connected << " of " << k.wanted << " held (" << k.failed
        << " failed), " << fixed(k.connects_per_second, 0) << " connects/s, RSS of all nodes "
        << mib(static_cast<double>(k.rss_after)) << " MiB = "
        << fixed(k.rss_per_connection / 1024.0, 2) << " KiB per connection\n";
    }
    if (p.one_to_one) {
      const auto& t = *p.one_to_one;
      o << "    one-to-one (" << t.users << " users): sustainable " << fixed(t.sustainable_rate, 0)
        << " msg/s; per step offered/delivered p99/p99.9/max ms, lost, nodes' CPU:\n";
      auto step_line = [&](const step_result& s) {
        o << "      " << pad(fixed(s.offered_rate, 0), 8) << pad(fixed(s.delivered_rate(), 0), 8)
          << pad(ms(s.latency.percentile(0.99)), 9) << pad(ms(s.latency.percentile(0.999)), 9)
          << pad(ms(s.latency.max()), 9) << pad(std::to_string(s.lost), 6) << " "
          << fixed(s.server_cores, 2) << " cores" << (s.generator_bound ? " (generator BOUND)" : "")
          << "\n";
      };
      for (const auto& s : t.steps) step_line(s);
      o << "    store (pg_stat_database over those steps): "
        << fixed(p.store_commits_per_second, 0) << " commits/s, "
        << fixed(p.store_rows_per_second, 0) << " rows written/s\n";
      render_pushes(o, "    pushes over those steps: ", p.steps_pushes);
      if (t.logins_fresh && t.logins_after_load) {
        o << "    logins: " << fixed(t.logins_fresh->logins_per_second, 0)
          << "/s on the fresh store, " << fixed(t.logins_after_load->logins_per_second, 0)
          << "/s after the load (one round each; server CPU per login "
          << fixed(server_us_per_login(*t.logins_fresh), 0) << " and "
          << fixed(server_us_per_login(*t.logins_after_load), 0) << " µs)\n";
      }
      if (t.after_relogin) {
        o << "    one more step after every user reconnected (each chat older than its "
             "connection):\n";
        step_line(*t.after_relogin);
        render_pushes(o, "      ", p.after_relogin_pushes);
      }
    }
    if (p.fanout) {
      const auto& f = *p.fanout;
      o << "    fanout (" << f.group_size << " members): sustainable " << fixed(f.sustainable_rate, 0)
        << " group msg/s, " << fixed(f.sustained_deliveries_per_second, 0)
        << " deliveries/s; last member p99 per step:";
      for (const auto& s : f.steps)
        o << " " << fixed(s.load.offered_rate, 0) << "/s " << ms(s.last_member.percentile(0.99))
          << " ms (lost " << s.load.lost << ", late " << s.late << ", repeated " << s.duplicates
          << ")";
      o << "; members disconnected " << f.disconnected << "\n";
    }
  }
}

std::string cluster_json(const cluster_result& c) {
  std::ostringstream o;
  o << "[";
  for (std::size_t i = 0; i < c.points.size(); ++i) {
    const auto& p = c.points[i];
    o << (i ? ",\n" : "\n") << "    {\"nodes\": " << p.nodes;
    if (p.connect) {
      o << ", \"connections_wanted\": " << p.connect->wanted
        << ", \"connections_held\": " << p.connect->connected
        << ", \"connects_per_second\": " << fixed(p.connect->connects_per_second, 0)
        << ", \"rss_bytes_per_connection\": " << fixed(p.connect->rss_per_connection, 0);
    }
    if (p.one_to_one) {
      o << ", \"one_to_one_sustainable_rate\": " << fixed(p.one_to_one->sustainable_rate, 0)
        << ", \"one_to_one_steps\": [";
      for (std::size_t k = 0; k < p.one_to_one->steps.size(); ++k)
        o << (k ? ", " : "") << one_to_one_step_json(p.one_to_one->steps[k]);
      o << "], \"store_seconds\": " << fixed(p.store_seconds, 1)
        << ", \"store_commits_per_second\": " << fixed(p.store_commits_per_second, 0)
        << ", \"store_rows_per_second\": " << fixed(p.store_rows_per_second, 0)
        << ", \"one_to_one_received\": " << p.steps_pushes.received;
      if (p.steps_pushes.checks) o << ", \"first_push_checks\": " << *p.steps_pushes.checks;
      if (p.steps_pushes.gaps) o << ", \"push_gaps\": " << *p.steps_pushes.gaps;
      if (p.one_to_one->logins_fresh && p.one_to_one->logins_after_load) {
        o << ", \"logins_fresh\": " << login_json(*p.one_to_one->logins_fresh)
          << ", \"logins_after_load\": " << login_json(*p.one_to_one->logins_after_load);
      }
      if (p.one_to_one->after_relogin) {
        o << ", \"after_relogin_step\": " << one_to_one_step_json(*p.one_to_one->after_relogin);
        const auto& a = p.after_relogin_pushes;
        if (a.checks) o << ", \"after_relogin_first_push_checks\": " << *a.checks;
        if (a.gaps) o << ", \"after_relogin_push_gaps\": " << *a.gaps;
      }
    }
    if (p.fanout) {
      o << ", \"fanout_sustainable_rate\": " << fixed(p.fanout->sustainable_rate, 0)
        << ", \"fanout_deliveries_per_second\": "
        << fixed(p.fanout->sustained_deliveries_per_second, 0) << ", \"fanout_last_member_p99_ms\": [";
      for (std::size_t k = 0; k < p.fanout->steps.size(); ++k)
        o << (k ? ", " : "") << ms(p.fanout->steps[k].last_member.percentile(0.99));
      o << "], \"fanout_lost\": [";
      for (std::size_t k = 0; k < p.fanout->steps.size(); ++k)
        o << (k ? ", " : "") << p.fanout->steps[k].load.lost;
      o << "], \"fanout_late\": [";
      for (std::size_t k = 0; k < p.fanout->steps.size(); ++k)
        o << (k ? ", " : "") << p.fanout->steps[k].late;
      o << "], \"fanout_disconnected\": " << p.fanout->disconnected;
    }
    o << "}";
  }
  o << "]";
  return o.str();
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
    std::vector<const step_result*> steps;
    for (const auto& s : t.steps) steps.push_back(&s);
    render_store_commits(o, steps);
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
  if (r.fanout) {
    o << "\n";
    render_fanout(o, *r.fanout);
  }
  if (r.media) {
    o << "\n";
    render_media(o, *r.media);
  }
  if (r.cluster) {
    o << "\n";
    render_cluster(o, *r.cluster);
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
    for (std::size_t i = 0; i < t.steps.size(); ++i)
      o << (i ? ",\n" : "\n") << "    " << one_to_one_step_json(t.steps[i]);
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
  if (r.fanout) {
    const auto& f = *r.fanout;
    o << ",\n  \"fanout\": {\"group_size\": " << f.group_size
      << ", \"recipients\": " << f.recipients << ", \"grace_seconds\": " << f.grace_seconds
      << ", \"create_ms\": " << fixed(f.create_ms, 3)
      << ", \"join_seconds\": " << fixed(f.join_seconds, 3)
      << ", \"server_rss_before\": " << f.server_rss_before
      << ", \"disconnected\": " << f.disconnected
      << ", \"sustainable_rate\": " << fixed(f.sustainable_rate, 0)
      << ", \"sustained_deliveries_per_second\": " << fixed(f.sustained_deliveries_per_second, 0)
      << ", \"steps\": [";
    for (std::size_t i = 0; i < f.steps.size(); ++i) {
      const auto& s = f.steps[i];
      const auto& l = s.load;
      // lost is in messages; received and late are in deliveries (one per recipient).
      o << (i ? ",\n" : "\n") << "    {\"offered_rate\": " << fixed(l.offered_rate, 0)
        << ", \"seconds\": " << l.seconds << ", \"sent\": " << l.sent
        << ", \"stored\": " << l.stored << ", \"lost\": " << l.lost << ", \"errors\": " << l.errors
        << ", \"skipped\": " << l.skipped << ", \"received\": " << l.received
        << ", \"late\": " << s.late << ", \"duplicates\": " << s.duplicates
        << ", \"deliveries_in_window\": " << s.deliveries_in_window
        << ", \"deliveries_per_second\": " << fixed(s.deliveries_per_second(), 0)
        << ", \"last_member_latency\": " << percentiles_json(s.last_member)
        << ", \"recipient_latency\": " << percentiles_json(l.latency)
        << ", \"server_cores\": " << fixed(l.server_cores, 3)
        << ", \"server_thread_cores\": " << thread_cores_json(l.server_thread_cores)
        << ", \"server_cpu_us_per_delivery\": " << fixed(s.cpu_us_per_delivery(l.server_cores), 3)
        << ", \"server_rss\": " << l.server_rss << ", \"server_rss_peak\": " << s.server_rss_peak
        << ", \"generator_cores\": " << fixed(l.generator_cores, 3)
        << ", \"generator_total_cores\": " << fixed(l.generator_total_cores, 3)
        << ", \"generator_bound\": " << (l.generator_bound ? "true" : "false")
        << ", \"store_commits\": " << store_commits_json(l.store_commits, l.seconds) << "}";
    }
    o << "]}";
  }
  if (r.media) o << ",\n  \"media\": " << media_json(*r.media);
  if (r.cluster) o << ",\n  \"cluster\": " << cluster_json(*r.cluster);
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
