#include "server/server.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "bus/local/local_bus.hpp"
#include "common/log.hpp"
#include "common/thread_name.hpp"
#include "presence/local/local_presence.hpp"
#include "server/connection_set.hpp"
#include "server/listener.hpp"
#include "server/metrics.hpp"
#include "server/shared_state.hpp"
#include "store/rocksdb/rocksdb_store.hpp"

namespace parley::server {

namespace asio = boost::asio;

struct server::impl {
  explicit impl(config c) : cfg(std::move(c)) {
    if (cfg.threads == 0) cfg.threads = std::max(1u, std::thread::hardware_concurrency());
    store::rocksdb_options o;
    o.path = cfg.data_dir / "store";
    o.node_id = cfg.node_id;
    o.sync = cfg.fsync;
    o.on_commit = [this](std::chrono::nanoseconds d, std::size_t n) {
      stats.store_write_latency.observe(d);
      stats.group_commits.fetch_add(1, std::memory_order_relaxed);
      stats.group_commit_requests.fetch_add(n, std::memory_order_relaxed);
    };
    store = std::make_unique<store::rocksdb_store>(std::move(o));
    state = std::make_unique<shared_state>(
        shared_state{cfg, *store, presence, bus, stats, websocket_options(cfg)});
    for (unsigned i = 0; i < cfg.threads; ++i) {
      contexts.push_back(std::make_unique<asio::io_context>(1));
      guards.emplace_back(contexts.back()->get_executor());
    }
  }

  config cfg;
  metrics stats;
  std::unique_ptr<store::rocksdb_store> store;
  presence::local_presence presence;
  bus::local_bus bus;
  std::unique_ptr<shared_state> state;
  connection_set connections;
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::unique_ptr<listener> accept;
  std::vector<std::thread> threads;
  std::unique_ptr<asio::signal_set> signals;

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
  d.accept = std::make_unique<listener>(d.contexts, endpoint, *d.state, d.connections);
  d.accept->start();
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
  asio::post(*d.contexts[0], [&d] {
    boost::system::error_code ignored;
    if (d.signals) d.signals->cancel(ignored);
  });
  d.connections.close_all();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (d.stats.connections.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  d.store->stop();  // commits what was queued; later calls fail with shutting_down
  d.guards.clear();
  for (auto& c : d.contexts) c->stop();
  for (auto& t : d.threads) t.join();
  d.threads.clear();
  log_info() << "stopped";
}

}  // namespace parley::server
