#include "server/server.hpp"

#include <sys/resource.h>
#include <sys/stat.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/log.hpp"
#include "common/thread_name.hpp"
#include "server/backends.hpp"
#include "server/connection_set.hpp"
#include "server/listener.hpp"
#include "server/metrics.hpp"
#include "server/shared_state.hpp"

namespace parley::server {

namespace asio = boost::asio;

namespace {

// Raises the soft open-file limit to the hard one and returns it.
std::size_t open_file_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return 1024;
  if (r.rlim_cur < r.rlim_max) {
    rlimit raised = r;
    raised.rlim_cur = r.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) r = raised;
  }
  return r.rlim_cur == RLIM_INFINITY ? std::size_t{1} << 20 : static_cast<std::size_t>(r.rlim_cur);
}

// The connection limits: the configured ones, within what the open-file limit allows once
// `reserved_fds` are set aside for the store (RocksDB keeps up to 256 tables open, plus its
// logs) and the process.
void derive_connection_limits(config& cfg) {
  const std::size_t files = open_file_limit();
  const std::size_t room = files > cfg.reserved_fds + 16 ? files - cfg.reserved_fds : files / 2;
  if (cfg.max_connections == 0 || cfg.max_connections > room) {
    if (cfg.max_connections > room) {
      log_warn() << "connections.max_connections = " << cfg.max_connections
                 << " exceeds what the open-file limit (" << files << ") leaves; using " << room;
    }
    cfg.max_connections = room;
  }
  if (cfg.max_unauthenticated == 0) {
    cfg.max_unauthenticated = std::max<std::size_t>(cfg.max_connections / 4, 1);
  }
  cfg.max_unauthenticated = std::min(cfg.max_unauthenticated, cfg.max_connections);
  log_info() << "connections: at most " << cfg.max_connections << " (open-file limit " << files
             << ", " << cfg.reserved_fds << " reserved), " << cfg.max_unauthenticated
             << " of them unauthenticated (" << cfg.max_unauthenticated_per_address
             << " per address, 0: no limit); memory budget " << (cfg.memory_budget_bytes >> 20)
             << " MiB; storage reserve " << (cfg.storage_reserve_bytes >> 20) << " MiB";
}

// The data directory holds everyone's ciphertext and account records: 0700, and every file
// created by this process 0600 (umask 077). Files left by an older version are tightened.
void secure_data_dir(const std::filesystem::path& dir) {
  ::umask(077);
  std::filesystem::create_directories(dir);
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const auto perms = it->is_directory(ec) ? fs::perms::owner_all
                                            : fs::perms::owner_read | fs::perms::owner_write;
    fs::permissions(it->path(), perms, fs::perm_options::replace, ec);
    ec.clear();
  }
}

}  // namespace

struct server::impl {
  explicit impl(config c)
      : cfg(prepared(std::move(c))),
        admit(cfg.max_connections, cfg.max_unauthenticated, cfg.memory_budget_bytes, connections,
              stats, cfg.max_unauthenticated_per_address,
              parse_address_blocks(cfg.unlimited_addresses)),
        limiters(cfg.rates) {
    if (cfg.threads == 0) cfg.threads = std::max(1u, std::thread::hardware_concurrency());
    backend = make_backends(cfg, [this](std::chrono::nanoseconds d, std::size_t n) {
      stats.store_write_latency.observe(d);
      stats.group_commits.fetch_add(1, std::memory_order_relaxed);
      stats.group_commit_requests.fetch_add(n, std::memory_order_relaxed);
    });
    if (!cfg.tls_cert.empty()) tls = std::make_unique<tls_context>(cfg.tls_cert, cfg.tls_key);
    for (unsigned i = 0; i < cfg.threads; ++i) {
      contexts.push_back(std::make_unique<asio::io_context>(1));
      guards.emplace_back(contexts.back()->get_executor());
      lanes.push_back(std::make_unique<delivery_lane>(contexts.back()->get_executor()));
    }
    merger = std::make_shared<group_receipts>(contexts.front()->get_executor(), *backend.store,
                                              *backend.bus, cfg.group_receipts_interval);
    media = std::make_unique<media_service>(cfg, *backend.store);
    state = std::make_unique<shared_state>(shared_state{cfg, *backend.store, *backend.presence,
                                                        *backend.bus, stats,
                                                        websocket_options(cfg), admit, limiters,
                                                        tls.get(), lanes, *merger, *media});
  }

  static config prepared(config c) {
    secure_data_dir(c.data_dir);
    derive_connection_limits(c);
    return c;
  }

  metrics stats;
  connection_set connections;
  config cfg;
  admission admit;
  // The metrics address's own few connections: scrapes and health checks still get in while
  // the main address is at its limits.
  admission admit_metrics{64, 64, 1u << 20, connections, stats};
  request_limiters limiters;
  std::unique_ptr<tls_context> tls;
  backends backend;
  std::unique_ptr<media_service> media;  // after the store: its sweeper calls the store
  std::optional<asio::ip::tcp::endpoint> media_endpoint;
  std::unique_ptr<shared_state> state;
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<std::unique_ptr<delivery_lane>> lanes;  // one per context
  std::shared_ptr<group_receipts> merger;  // its timer runs on contexts[0]: destroyed first
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::unique_ptr<listener> accept;
  std::unique_ptr<listener> accept_metrics;  // only with a metrics address
  std::vector<std::thread> threads;
  std::unique_ptr<asio::signal_set> signals;
  std::unique_ptr<asio::signal_set> reload_signal;   // SIGHUP: reload the TLS files
  std::unique_ptr<asio::steady_timer> budget_timer;  // admission::enforce every 100 ms

  void wait_for_reload() {
    reload_signal->async_wait([this](const boost::system::error_code& ec, int) {
      if (ec) return;
      if (auto error = tls->reload(); error.empty()) {
        media->set_tls(tls->asio_context());  // the blob server's new connections too
        log_warn() << "TLS: certificate and key reloaded from " << cfg.tls_cert << " and "
                   << cfg.tls_key;
      } else {
        log_error() << "TLS: reload failed, keeping the previous certificate: " << error;
      }
      wait_for_reload();
    });
  }

  void enforce_budget() {
    budget_timer->expires_after(std::chrono::milliseconds(100));
    budget_timer->async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      admit.enforce();
      enforce_budget();
    });
  }

  std::mutex stop_mutex;
  std::condition_variable stop_cv;
  bool stop_requested = false;
};

server::server(config cfg) : impl_(std::make_unique<impl>(std::move(cfg))) {}

server::~server() {
  stop();
  for (auto& t : impl_->threads) {
    if (t.joinable()) {
      // wait() was never called: shut down here.
      wait();
      break;
    }
  }
}

asio::ip::tcp::endpoint server::start() {
  auto& d = *impl_;
  const asio::ip::tcp::endpoint endpoint(asio::ip::make_address(d.cfg.listen_host),
                                         d.cfg.listen_port);
  const bool own_metrics = !d.cfg.metrics_host.empty();
  d.accept = std::make_unique<listener>(d.contexts, endpoint, *d.state, d.connections,
                                        own_metrics ? http_role::main_no_metrics : http_role::main,
                                        d.admit);
  d.accept->start();
  // none with S3; the blob server speaks TLS when the main port does
  d.media_endpoint =
      d.media->start(d.accept->local_endpoint(), d.tls ? d.tls->asio_context() : nullptr);
  if (own_metrics) {
    const asio::ip::tcp::endpoint metrics_endpoint(asio::ip::make_address(d.cfg.metrics_host),
                                                   d.cfg.metrics_port);
    d.accept_metrics = std::make_unique<listener>(
        d.contexts, metrics_endpoint, *d.state, d.connections, http_role::metrics, d.admit_metrics);
    d.accept_metrics->start();
    log_info() << "metrics on " << d.accept_metrics->local_endpoint();
  }
  d.budget_timer = std::make_unique<asio::steady_timer>(*d.contexts[0]);
  d.enforce_budget();
  if (d.tls) {
    d.reload_signal = std::make_unique<asio::signal_set>(*d.contexts[0], SIGHUP);
    d.wait_for_reload();
  }
  d.signals = std::make_unique<asio::signal_set>(*d.contexts[0], SIGINT, SIGTERM);
  d.signals->async_wait([this](const boost::system::error_code& ec, int) {
    if (!ec) stop();
  });
  for (std::size_t i = 0; i < d.contexts.size(); ++i) {
    d.threads.emplace_back([ctx = d.contexts[i].get()] { ctx->run(); });
    name_thread(d.threads.back(), "parley-io-" + std::to_string(i));
  }
  return d.accept->local_endpoint();
}

std::optional<asio::ip::tcp::endpoint> server::media_endpoint() const {
  return impl_->media_endpoint;
}

std::optional<asio::ip::tcp::endpoint> server::metrics_endpoint() const {
  if (!impl_->accept_metrics) return std::nullopt;
  return impl_->accept_metrics->local_endpoint();
}

void server::stop() {
  std::lock_guard lock(impl_->stop_mutex);
  impl_->stop_requested = true;
  impl_->stop_cv.notify_all();
}

void server::wait() {
  auto& d = *impl_;
  {
    std::unique_lock lock(d.stop_mutex);
    d.stop_cv.wait(lock, [&] { return d.stop_requested; });
  }
  if (d.threads.empty()) return;
  log_info() << "shutting down: " << d.connections.size() << " connections open";
  if (d.accept) d.accept->stop();
  if (d.accept_metrics) d.accept_metrics->stop();
  asio::post(*d.contexts[0], [&d] {
    boost::system::error_code ignored;
    if (d.signals) d.signals->cancel(ignored);
    if (d.budget_timer) d.budget_timer->cancel();
    if (d.reload_signal) d.reload_signal->cancel(ignored);
  });
  d.connections.close_all();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (d.stats.connections.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // A cluster's Redis threads push into the sessions: joined before the I/O threads that run
  // the sessions (and the lanes they post to) stop and go.
  d.backend.bus->stop();
  d.media->stop();          // the sweeper and the blob server, before the store they call
  d.backend.store->stop();  // commits what was queued; later calls fail with shutting_down
  d.guards.clear();
  for (auto& c : d.contexts) c->stop();
  for (auto& t : d.threads) t.join();
  d.threads.clear();
  log_info() << "stopped";
}

}  // namespace parley::server
