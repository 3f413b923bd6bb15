// The scenarios of parley-bench. Each drives a server it did not start (the caller spawns it
// and passes its URL and pid) and returns what it measured; nothing here prints.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "latency_histogram.hpp"
#include "process_sampler.hpp"

namespace parley::bench {

struct target {
  // The server's WebSocket URL; for a cluster, every node's, separated by spaces
  // (connections are spread over them: pick_url).
  std::string url;
  pid_t pid = -1;  // sampled from /proc during each step
  int procs = 2;   // worker processes of the generator
  // HOST:PORT serving parleyd's GET /metrics (its listen address unless it has a metrics
  // address of its own); empty: the store's commit latencies are not reported.
  std::string metrics_address;
  // A cluster's other nodes, sampled with `pid` and summed (CPU, RSS, threads).
  std::vector<pid_t> more_pids;
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
  // With relogin and rate_after_relogin: one more step at that rate after logins_after_load,
  // on those new connections (not counted in sustainable_rate).
  std::optional<step_result> after_relogin;
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

// The pushes of a window of the cluster scenario, all nodes together: the messages the
// workers received, the first pushes checked against a cursor read
// (parley_first_push_checks_total) and the pushes that found a gap (parley_push_gaps_total).
// The counts are none when a node's /metrics could not be read.
struct push_counts {
  std::uint64_t received = 0;
  std::optional<std::uint64_t> checks, gaps;
};

// The cluster scenario: for each node count, PostgreSQL, Redis and that many parleyd nodes on
// this machine, the connections and users spread evenly over the nodes (pick_url), and the
// connect, one-to-one and fanout scenarios run against them. The store's work as PostgreSQL
// counts it (pg_stat_database: transactions committed, rows inserted, updated or deleted)
// over the one-to-one steps.
struct cluster_point {
  int nodes = 0;
  std::optional<connect_result> connect;
  std::optional<one_to_one_result> one_to_one;
  std::optional<fanout_result> fanout;
  double store_seconds = 0;  // the one-to-one steps' time the store figures cover
  double store_commits_per_second = 0;
  double store_rows_per_second = 0;
  // Over the one-to-one steps, and over one_to_one->after_relogin (the logins included: a
  // drain checks nothing).
  push_counts steps_pushes, after_relogin_pushes;
};

struct cluster_result {
  std::vector<cluster_point> points;
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

// Files through parleyd's blob store (docs/protocol.md, "Media"). MB here is 10^6 bytes, as in
// the targets; what moves is always a file's ciphertext.

// One timed transfer of a whole file (client::upload or client::download, which stream it in
// 256-KiB pieces), and what parleyd did meanwhile.
struct media_transfer {
  bool ran = false;  // tried at all (a download needs its upload first)
  bool ok = false;
  std::string error;        // what failed, for a person, when ran && !ok
  std::uint64_t bytes = 0;  // ciphertext bytes of the file
  double seconds = 0;       // the call, wall time (HEAD + PUT, or GET)
  // parleyd's VmRSS just before, and its highest read every 100 ms during it and at its end.
  std::uint64_t server_rss_before = 0, server_rss_peak = 0;
  double server_cores = 0;   // parleyd's CPU over the transfer, all threads
  double blob_io_cores = 0;  // of which its blob server's thread ("blob-io")
  double mb_per_second() const {
    return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e6 : 0;
  }
  double rss_growth() const {  // bytes; 0 if it shrank
    return server_rss_peak > server_rss_before
               ? static_cast<double>(server_rss_peak - server_rss_before)
               : 0;
  }
};

// The same file uploaded by `uploads` threads at once, each to a slot of its own.
struct media_concurrent {
  std::size_t uploads = 0, stored = 0;  // stored: the store answered 201 (size and hash checked)
  std::uint64_t bytes_each = 0;         // ciphertext
  double seconds = 0;                   // the first upload's start to the last one's end
  double p50_seconds = 0, max_seconds = 0;  // per upload
  std::uint64_t server_rss_before = 0, server_rss_peak = 0;
  double server_cores = 0;
  std::vector<std::string> errors;  // the first few failures, for a person
  std::size_t failed() const { return uploads - stored; }
  double mb_per_second() const {  // what was stored, over `seconds`
    return seconds > 0 ? static_cast<double>(stored * bytes_each) / seconds / 1e6 : 0;
  }
};

// The transfers that ran in a loop during the second one-to-one step: one thread uploading
// the small file (to slots granted before the steps, as many as upload_slots; then it
// downloads the small file instead) and one downloading the big file, each again as soon as
// the last ended, from the step's start until its end (the transfer under way then finishes).
struct media_background {
  std::size_t upload_slots = 0;
  std::uint64_t uploads = 0, small_downloads = 0, big_downloads = 0, failed = 0;
  std::uint64_t bytes = 0;  // ciphertext moved by the transfers that completed
  double seconds = 0;       // from the step's start to the end of the last transfer
  std::uint64_t server_rss_before = 0, server_rss_peak = 0;  // over the same time, every 100 ms
  std::vector<std::string> errors;  // the first few failures
  double mb_per_second() const {
    return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e6 : 0;
  }
};

struct media_result {
  // The big file (uploaded and downloaded alone) and the small one (the concurrent uploads):
  // random plaintext, and its ciphertext (media::encrypt_file), in bytes.
  std::uint64_t file_bytes = 0, file_cipher_bytes = 0;
  std::uint64_t small_bytes = 0, small_cipher_bytes = 0;
  // The client's side, in this process, one thread: media::encrypt_file of the big file and
  // media::decrypt_file of its download (each reads, writes and fsyncs its output), and
  // whether that download decrypted to the original, byte for byte.
  double encrypt_seconds = 0, decrypt_seconds = 0;
  bool decrypted_matches = false;
  media_transfer upload, download;  // the big file, through parleyd's own (local) blob store
  media_concurrent concurrent;
  // One-to-one at `rate` msg/s in two steps of the same length: steps[0] without transfers,
  // steps[1] with `background` running.
  double rate = 0;
  one_to_one_result one_to_one;
  media_background background;
  // The big file again through a parleyd whose blob store is an S3-compatible one
  // (--media-s3): empty s3_store when not asked for. The download is checked by decrypting it.
  std::string s3_store;  // ENDPOINT/BUCKET
  // s3_upload as parley's client makes it (in 8 MiB parts over 8 MiB); s3_upload_one_put the
  // same file in one PUT to a slot of its own, right after, for comparison.
  media_transfer s3_upload, s3_download, s3_upload_one_put;
  std::vector<std::string> errors;  // what failed besides the transfers themselves

  // p99 of the step with transfers / the step without; 0 if either is missing.
  double p99_ratio() const;
  // Every transfer ran and completed, every file arrived whole, nothing of the one-to-one
  // steps was lost. Timings never count.
  bool nothing_failed() const;
};

struct media_options {
  std::uint64_t file_bytes = 100'000'000;  // the big file's plaintext (at most 100,000,000)
  std::uint64_t small_bytes = 10'000'000;  // each concurrent upload's plaintext
  std::size_t concurrent_uploads = 20;
  std::size_t users = 1'000;  // of the one-to-one steps
  double rate = 1'000;        // msg/s of both one-to-one steps
  double step_seconds = 60;
  // Where the files go (created, and removed with everything in it at the end).
  std::filesystem::path work_dir;
  // With --media-s3: starts a parleyd whose blob store is the S3-compatible one and returns
  // it as a target (the caller keeps it running until run_media returns), and names that store.
  std::function<target()> s3_server;
  std::string s3_store;
};

// The server's CPU, RSS and threads now: `pid`'s, plus every one of `more_pids` (summed).
process_sample sample_server(const target& t);
// The body of GET /metrics from `address` (HOST:PORT, an IPv6 host in brackets); none if it
// cannot be read.
std::optional<std::string> get_metrics(const std::string& address);
// The value of the unlabelled metric `name` (a counter or gauge) in a /metrics body; none if
// it has no such line.
std::optional<std::uint64_t> metric_value(std::string_view body, std::string_view name);
std::uint64_t server_rss(const target& t);

connect_result run_connect(const target& t, std::size_t connections, double hold_seconds);
// The users' logins measured before and after the load (logins_fresh, logins_after_load).
struct relogin_options {
  // Rounds per set (all users dropped, 2 s, all back), reported by the median round: one
  // round of a thousand logins takes ~0.2 s, too short to stand alone on this shared machine.
  std::size_t rounds = 5;
  // If above 0: one more step at this rate (msg/s) on the connections of the last logins
  // (one_to_one_result::after_relogin).
  double rate_after = 0;
};

// `at_boundary(k)` (optional) is called in this process at each step boundary k = 0 .. steps,
// right after parleyd was sampled there: k is the start of step k, and the end of step k - 1;
// then once more with k = steps + 1 when every worker has received the last step's
// stragglers (before the logins after the load, with relogin).
one_to_one_result run_one_to_one(const target& t, std::size_t users,
                                 const std::vector<double>& rates, double step_seconds,
                                 std::optional<relogin_options> relogin = std::nullopt,
                                 const std::function<void(std::size_t)>& at_boundary = {});
// The media scenario (bench/media_scenario.cpp): the big file uploaded and downloaded alone,
// the small one uploaded `concurrent_uploads` times at once, one-to-one without and with
// transfers running, and the big file through S3 if asked for. Throws if a user cannot be set
// up or a request it needs (RequestUpload, SendMessage, RequestDownload) is refused; failed
// transfers are reported, not thrown.
media_result run_media(const target& t, const media_options& o);
drain_result run_drain(const target& t, std::size_t messages);
// One group of `group_size` members (2-1,024); `rates` in group messages per second.
fanout_result run_fanout(const target& t, std::size_t group_size, const std::vector<double>& rates,
                         double step_seconds, double grace_seconds);
baseline_result run_baseline(const target& t, std::size_t connections, int window, double seconds);

}  // namespace parley::bench
