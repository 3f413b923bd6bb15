// The scenarios of parley-bench. Each drives a server it did not start (the caller spawns it
// and passes its URL and pid) and returns what it measured; nothing here prints.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "latency_histogram.hpp"

namespace parley::bench {

struct target {
  std::string url;
  pid_t pid = -1;  // sampled from /proc during each step
  int procs = 2;   // worker processes of the generator
  // HOST:PORT serving parleyd's GET /metrics (its listen address unless it has a metrics
  // address of its own); empty: the store's commit latencies are not reported.
  std::string metrics_address;
};

struct connect_result {
  std::size_t wanted = 0, connected = 0, failed = 0;
  double seconds = 0;  // first connect to last authenticated
  double connects_per_second = 0;
  std::uint64_t rss_before = 0, rss_after = 0;
  double rss_per_connection = 0;  // bytes, marginal
  double idle_server_cores = 0;   // while holding them all
  // CPU time spent during the ramp, by the server and by all generator workers together.
  double ramp_server_cpu_seconds = 0, ramp_generator_cpu_seconds = 0;
};

// The group commits of parleyd's store during one step: the deltas of the
// parley_store_write_seconds histogram (one observation per commit: write + fsync) and of
// parley_group_commit_requests_total, scraped from GET /metrics at the step's start and end.
struct store_commit_stats {
  std::uint64_t commits = 0;
  std::uint64_t writes = 0;  // store writes those commits carried
  double mean_ms = 0;        // from the histogram's _sum and _count
  // Interpolated linearly within their bucket, as Prometheus's histogram_quantile() does; one
  // that falls in the +Inf bucket reads as the last finite bound (2.5 s).
  double p50_ms = 0, p99_ms = 0, p999_ms = 0;
  // Not a measured maximum: the upper bound of the highest bucket that gained a commit (the
  // slowest commit took at most this). Infinity when it is the +Inf bucket.
  double max_le_ms = 0;
};

struct step_result {
  double offered_rate = 0;
  double seconds = 0;
  std::uint64_t sent = 0, stored = 0, received = 0, errors = 0, skipped = 0;
  std::uint64_t lost = 0;     // stored (✓) but never received
  latency_histogram latency;  // send -> receive, µs
  double server_cores = 0;
  std::uint64_t server_rss = 0;
  std::map<std::string, double> server_thread_cores;  // by thread name ("store-writer", ...)
  double generator_cores = 0;        // busiest worker
  double generator_total_cores = 0;  // all workers together
  bool generator_bound = false;      // the generator fell behind its schedule
  std::optional<store_commit_stats> store_commits;  // none when /metrics could not be read
  double delivered_rate() const {
    return seconds > 0 ? static_cast<double>(received) / seconds : 0;
  }
  // Microseconds of CPU time per message stored in this step, for `cores` busy over it.
  double cpu_us_per_message(double cores) const {
    return stored > 0 ? cores * seconds * 1e6 / static_cast<double>(stored) : 0;
  }
};

// Logins of the one-to-one scenario's users, all at once (each worker 512 at a time, as the
// connect scenario): connect, WebSocket handshake, Authenticate (with the receipts stamp the
// device kept from its last session, if any), and everything the server pushes up to
// QueueEmpty (the drain and the receipt watermarks that moved after that stamp; all the
// chats' current ones without a stamp).
struct login_result {
  std::size_t wanted = 0, logged_in = 0, failed = 0;
  double seconds = 0;  // first connect to the last QueueEmpty
  double logins_per_second = 0;
  double server_cpu_seconds = 0, generator_cpu_seconds = 0;  // over the logins
  std::uint64_t drained = 0;   // envelopes the drains pushed (messages not acked before)
  std::uint64_t receipts = 0;  // Receipt entries pushed before QueueEmpty
  std::size_t with_stamp = 0;  // logins presenting a receipts stamp (receipts_since != 0)
  // parleyd's CPU over the logins by thread name, with the numbered threads of a kind summed
  // ("parley-io-0" and "parley-io-1" as "parley-io"): where a login's cost goes, and what
  // else (RocksDB's flushes and compactions) ran meanwhile.
  std::map<std::string, double> server_thread_cpu_seconds;
  // With several rounds: this is the median round, and these are every round's logins/s in
  // the order they ran.
  std::vector<double> round_rates;
};

struct one_to_one_result {
  std::size_t users = 0;
  std::vector<step_result> steps;
  double sustainable_rate = 0;  // highest offered rate with p99 < 100 ms, nothing lost
  // With `relogin` (the logins-after-load scenario): the users' logins on the fresh server
  // just after their registration, and again after the load (every connection dropped at
  // once, then all of them re-authenticated).
  std::optional<login_result> logins_fresh, logins_after_load;
  double login_ratio() const {  // after the load / fresh, logins per second
    return logins_fresh && logins_after_load && logins_fresh->logins_per_second > 0
               ? logins_after_load->logins_per_second / logins_fresh->logins_per_second
               : 0;
  }
};

// One step of the fanout scenario: one sender sends `load.offered_rate` group messages a
// second to a group whose other members (the recipients) are all online and ack what they get.
// A message's deadline is the end of the step it was sent in plus the grace period. In `load`:
// sent, stored (✓), errors and skipped count group messages; received counts recipient
// deliveries of this step's messages by their deadline; lost counts messages stored but not
// received by every recipient by their deadline; latency is the per-recipient receive - send
// time of every delivery of this step's messages (late ones too), µs; server_rss is parleyd's
// at the step's end. The CPU, generator and store-commit fields are as in one-to-one.
struct fanout_step_result {
  step_result load;
  // Per message stored and received by every recipient by its deadline: the receive time of
  // the last recipient to get it minus its send time, µs (one value per message).
  latency_histogram last_member;
  std::uint64_t late = 0;  // deliveries of this step's messages after their deadline
  // Envelopes a recipient got at or below a seq it already had (pushed again, or out of
  // order); not counted as received. None expected: nobody reconnects during the steps.
  std::uint64_t duplicates = 0;
  // Deliveries of group messages received within this step's window, whichever step sent
  // them: the delivery throughput of the window (a backlog counts where it arrives).
  std::uint64_t deliveries_in_window = 0;
  // The highest of parleyd's RSS, read every 100 ms over the step: its memory while the
  // step's messages are in flight.
  std::uint64_t server_rss_peak = 0;
  double deliveries_per_second() const {
    return load.seconds > 0 ? static_cast<double>(deliveries_in_window) / load.seconds : 0;
  }
  // Microseconds of CPU time per delivery in the step's window, for `cores` busy over it.
  double cpu_us_per_delivery(double cores) const {
    return deliveries_in_window > 0
               ? cores * load.seconds * 1e6 / static_cast<double>(deliveries_in_window)
               : 0;
  }
};

struct fanout_result {
  std::size_t group_size = 0;  // members, the sender (the creator) included
  std::size_t recipients = 0;  // group_size - 1: every member but the sender
  double grace_seconds = 0;
  double create_ms = 0;                 // the creator's CreateGroup round trip (GroupInfo back)
  double join_seconds = 0;              // every other member's login, each read to its QueueEmpty
  std::uint64_t server_rss_before = 0;  // every member online, before the first step
  // Members whose connection ended during the steps or their stragglers: parleyd closes one
  // whose outgoing queue overflows ([limits] max_outbound_frames / _bytes), a member that
  // reads too slowly. Their messages from then on count as lost.
  std::size_t disconnected = 0;
  std::vector<fanout_step_result> steps;
  // The highest offered rate whose step lost nothing, had no errors or skipped sends, and had
  // a last-member p99 under 100 ms; and that step's deliveries per second.
  double sustainable_rate = 0;
  double sustained_deliveries_per_second = 0;
};

struct drain_result {
  std::size_t queued = 0, received = 0;
  bool in_order = false;
  double milliseconds = 0;  // connect -> last message
};

struct baseline_result {
  std::size_t connections = 0;
  double seconds = 0;
  std::uint64_t round_trips = 0;
  double rate = 0;  // round trips per second
  latency_histogram latency;
  double server_cores = 0;
  double generator_cores = 0;  // all workers together
};

connect_result run_connect(const target& t, std::size_t connections, double hold_seconds);
one_to_one_result run_one_to_one(const target& t, std::size_t users,
                                 const std::vector<double>& rates, double step_seconds,
                                 bool relogin = false);
drain_result run_drain(const target& t, std::size_t messages);
// One group of `group_size` members (2-1,024); `rates` in group messages per second.
fanout_result run_fanout(const target& t, std::size_t group_size, const std::vector<double>& rates,
                         double step_seconds, double grace_seconds);
baseline_result run_baseline(const target& t, std::size_t connections, int window, double seconds);

}  // namespace parley::bench
