#include "server/metrics.hpp"

#include <cstdio>

namespace parley::server {

void latency_histogram::observe(std::chrono::nanoseconds d) {
  const double seconds = std::chrono::duration<double>(d).count();
  std::size_t i = 0;
  while (i < bounds.size() && seconds > bounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<std::uint64_t>(d.count()), std::memory_order_relaxed);
}

void latency_histogram::render(std::string& out, const char* name, const char* help) const {
  char line[256];
  std::snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
  out += line;
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    if (i < bounds.size()) {
      std::snprintf(line, sizeof line, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
                    static_cast<unsigned long long>(cumulative));
    } else {
      std::snprintf(line, sizeof line, "%s_bucket{le=\"+Inf\"} %llu\n", name,
                    static_cast<unsigned long long>(cumulative));
    }
    out += line;
  }
  std::snprintf(line, sizeof line, "%s_sum %.9f\n%s_count %llu\n", name,
                static_cast<double>(sum_ns_.load()) / 1e9, name,
                static_cast<unsigned long long>(count_.load()));
  out += line;
}

std::string metrics::render(const gauges& g) const {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, auto value) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
    out += name;
    out += ' ';
    out += std::to_string(value);
    out += '\n';
  };
  metric("parley_connections", "gauge", "Open WebSocket connections.", connections.load());
  metric("parley_connections_total", "counter", "WebSocket connections accepted.",
         connections_total.load());
  metric("parley_frames_in_total", "counter", "Frames received.", frames_in.load());
  metric("parley_frames_out_total", "counter", "Frames sent.", frames_out.load());
  metric("parley_bad_frames_total", "counter", "Frames answered with an error.", bad_frames.load());
  metric("parley_messages_stored_total", "counter", "Messages durably stored.",
         messages_stored.load());
  metric("parley_slow_readers_closed_total", "counter",
         "Connections closed because their outgoing queue filled.", slow_readers_closed.load());
  metric("parley_push_gaps_total", "counter",
         "Live pushes that did not follow what their connection had seen of the chat (one "
         "before was lost on the way): the chat log was read again instead.",
         gap_rereads.load());
  metric("parley_first_push_checks_total", "counter",
         "Cluster: a chat's first live pushes on a connection, each held until the device's "
         "stored cursor was read (one store read each), so that it does not pass one lost on "
         "the way. Always 0 without --presence (the embedded bus pushes in commit order).",
         first_push_checks.load());
  metric("parley_store_pending_writes", "gauge", "Write requests waiting for the store's writer.",
         g.pending_writes);
  metric("parley_store_writable", "gauge",
         "1 while the store accepts writes, 0 while it refuses them (disk full, failed write).",
         g.store_writable ? 1 : 0);
  metric("parley_buffered_bytes", "gauge",
         "Bytes all connections hold in their buffers (bounded by the memory budget).",
         g.buffered_bytes);
  metric("parley_open_connections", "gauge", "Open TCP connections (HTTP and WebSocket).",
         g.open_connections);
  metric("parley_max_connections", "gauge", "The connection limit.", g.max_connections);
  metric("parley_connections_refused_total", "counter",
         "Connections refused at accept because a connection limit was reached.",
         connections_refused.load());
  metric("parley_connections_refused_per_address_total", "counter",
         "Of those, connections refused because their source address already held "
         "max_unauthenticated_per_address unauthenticated connections.",
         connections_refused_per_address.load());
  metric("parley_connections_shed_total", "counter",
         "Connections dropped because all connections together exceeded the memory budget.",
         connections_shed.load());
  metric("parley_rate_limited_total", "counter", "Requests refused with RATE_LIMITED.",
         rate_limited.load());
  metric("parley_store_busy_total", "counter",
         "Requests refused with BUSY: the store's writer queue was full, or a lock or statement "
         "timed out.",
         store_busy.load());
  metric("parley_auth_failures_total", "counter", "Failed Authenticate requests.",
         auth_failures.load());
  metric("parley_group_commits_total", "counter", "Synced store write groups.",
         group_commits.load());
  metric("parley_group_commit_requests_total", "counter", "Store writes in those groups.",
         group_commit_requests.load());
  store_write_latency.render(out, "parley_store_write_seconds",
                             "Latency of one group commit (write + fsync).");
  return out;
}

}  // namespace parley::server
