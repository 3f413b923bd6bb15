// What the server admits: how many connections, how many of them unauthenticated, and how
// many bytes all of them may hold in their buffers together.
//
// - Connections: at most `max_connections` open TCP connections (HTTP and WebSocket alike),
//   of which at most `max_unauthenticated` not authenticated yet (HTTP keep-alive,
//   WebSocket before Authenticate), and of those at most `max_unauthenticated_per_address`
//   from one source (common/source_limit.hpp). The limits leave file descriptors for the store and
//   the process (server.cpp derives them from RLIMIT_NOFILE), so a flood of idle sockets cannot
//   starve RocksDB of the descriptor it needs for its next log file.
// - Memory: every connection reports the bytes it holds (partial frames, outgoing queue,
//   unwritten batch); past `memory_budget` in total, the connections holding the most are
//   dropped until the total is under 90 % of the budget. Per connection, what it may hold is
//   already bounded (max frame size, outgoing queue limits); the budget bounds the sum.
//
// Thread-safe: counters are atomics; shedding runs at most every 100 ms, on the thread whose
// report crossed the budget (or in enforce()), and only posts aborts to the victims' executors.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "common/log.hpp"
#include "common/source_limit.hpp"
#include "server/connection_set.hpp"
#include "server/metrics.hpp"

namespace parley::server {

class admission {
 public:
  admission(std::size_t max_connections, std::size_t max_unauthenticated, std::size_t memory_budget,
            connection_set& connections, metrics& stats, std::size_t max_per_source = 0,
            std::vector<address_block> unlimited_sources = {})
      : max_connections_(max_connections),
        max_unauthenticated_(max_unauthenticated),
        memory_budget_(memory_budget),
        connections_(connections),
        stats_(stats),
        sources_(max_per_source, std::move(unlimited_sources)) {}

  // One admitted TCP connection: released (counted out) when destroyed. Movable.
  class ticket {
   public:
    ticket() = default;
    ticket(admission* a, source_limit::slot source) : admission_(a), source_(std::move(source)) {}
    ticket(ticket&& o) noexcept
        : admission_(std::exchange(o.admission_, nullptr)),
          source_(std::move(o.source_)),
          authenticated_(o.authenticated_) {}
    ticket& operator=(ticket&& o) noexcept {
      if (this != &o) {
        release();
        admission_ = std::exchange(o.admission_, nullptr);
        source_ = std::move(o.source_);
        authenticated_ = o.authenticated_;
      }
      return *this;
    }
    ~ticket() { release(); }

    // The connection authenticated: it no longer counts against max_unauthenticated, nor
    // against its source's share of it.
    void authenticated() {
      if (!admission_ || authenticated_) return;
      authenticated_ = true;
      admission_->unauthenticated_.fetch_sub(1, std::memory_order_relaxed);
      source_.reset();
    }
    void release() {
      if (!admission_) return;
      if (!authenticated_) admission_->unauthenticated_.fetch_sub(1, std::memory_order_relaxed);
      source_.reset();
      admission_->open_.fetch_sub(1, std::memory_order_relaxed);
      admission_ = nullptr;
    }
    explicit operator bool() const { return admission_ != nullptr; }

   private:
    admission* admission_ = nullptr;
    source_limit::slot source_;  // held in sources_ while unauthenticated
    bool authenticated_ = false;
  };

  // A connection from `from` (nullopt: its address is not known, and it is not counted per
  // source) was accepted: its ticket, or an empty one if it must be refused.
  ticket admit(const std::optional<boost::asio::ip::address>& from = std::nullopt) {
    if (open_.fetch_add(1, std::memory_order_relaxed) >= max_connections_) {
      open_.fetch_sub(1, std::memory_order_relaxed);
      return {};
    }
    if (unauthenticated_.fetch_add(1, std::memory_order_relaxed) >= max_unauthenticated_) {
      unauthenticated_.fetch_sub(1, std::memory_order_relaxed);
      open_.fetch_sub(1, std::memory_order_relaxed);
      return {};
    }
    source_limit::slot source;
    if (from) {
      auto held = sources_.acquire(*from);
      if (!held) {
        unauthenticated_.fetch_sub(1, std::memory_order_relaxed);
        open_.fetch_sub(1, std::memory_order_relaxed);
        stats_.connections_refused_per_address.fetch_add(1, std::memory_order_relaxed);
        return {};
      }
      source = std::move(*held);
    }
    return ticket(this, std::move(source));
  }
  // Sources holding unauthenticated connections now (those counted).
  std::size_t sources() const { return sources_.sources(); }

  // A connection's buffered bytes changed by `delta`.
  void buffered(std::ptrdiff_t delta) {
    const auto total = buffered_.fetch_add(delta, std::memory_order_relaxed) + delta;
    if (delta > 0 && total > static_cast<std::ptrdiff_t>(memory_budget_)) shed(total);
  }

  // Sheds if the total is over the budget. The server calls it every 100 ms, so that a budget
  // crossed by the last report of a burst is enforced although no report follows.
  void enforce() {
    const auto total = buffered_.load(std::memory_order_relaxed);
    if (total > static_cast<std::ptrdiff_t>(memory_budget_)) shed(total);
  }

  std::size_t buffered_bytes() const {
    return static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, buffered_.load()));
  }
  std::size_t open() const { return open_.load(std::memory_order_relaxed); }
  std::size_t max_connections() const { return max_connections_; }

 private:
  void shed(std::ptrdiff_t total) {
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    auto last = last_shed_.load(std::memory_order_relaxed);
    const auto interval = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::milliseconds(100))
                              .count();
    if (now - last < interval) return;
    if (!last_shed_.compare_exchange_strong(last, now)) return;  // another thread sheds
    const auto target = static_cast<std::ptrdiff_t>(memory_budget_ / 10 * 9);
    const std::size_t n = connections_.shed_largest(static_cast<std::size_t>(total - target));
    stats_.connections_shed.fetch_add(n, std::memory_order_relaxed);
    log_warn() << "memory budget exceeded: " << (total >> 20) << " MiB buffered, budget "
               << (memory_budget_ >> 20) << " MiB; dropped the " << n
               << " connections holding the most";
  }

  const std::size_t max_connections_;
  const std::size_t max_unauthenticated_;
  const std::size_t memory_budget_;
  connection_set& connections_;
  metrics& stats_;
  std::atomic<std::size_t> open_{0};
  std::atomic<std::size_t> unauthenticated_{0};
  std::atomic<std::ptrdiff_t> buffered_{0};
  std::atomic<std::chrono::steady_clock::rep> last_shed_{0};
  source_limit sources_;
};

}  // namespace parley::server
