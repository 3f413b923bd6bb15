#include "server/backends.hpp"

#include <algorithm>

#include "bus/local/local_bus.hpp"
#include "bus/redis/redis_bus.hpp"
#include "common/log.hpp"
#include "presence/local/local_presence.hpp"
#include "presence/redis/redis_presence.hpp"
#include "redis/redis_client.hpp"
#include "store/postgresql/postgresql_store.hpp"
#include "store/rocksdb/rocksdb_store.hpp"

namespace parley::server {

namespace {

std::unique_ptr<store::store> make_store(const config& cfg, commit_observer on_commit) {
  if (!cfg.store_url.empty()) {
    store::postgresql_options o;
    o.conninfo = cfg.store_url;
    o.node_id = cfg.node_id;
    o.sync = cfg.fsync;
    o.dedupe_window = std::chrono::hours(24 * cfg.dedupe_days);
    o.max_pending = store_max_pending(cfg);
    o.writers = cfg.store_writers;
    o.on_commit = std::move(on_commit);
    return std::make_unique<store::postgresql_store>(std::move(o));
  }
  store::rocksdb_options o;
  o.path = cfg.data_dir / "store";
  o.node_id = cfg.node_id;
  o.sync = cfg.fsync;
  o.reserve_bytes = cfg.storage_reserve_bytes;
  o.dedupe_window = std::chrono::hours(24 * cfg.dedupe_days);
  o.max_pending = store_max_pending(cfg);
  o.memtable_budget_bytes = cfg.memtable_budget_bytes;
  o.on_commit = std::move(on_commit);
  return std::make_unique<store::rocksdb_store>(std::move(o));
}

}  // namespace

std::size_t store_max_pending(const config& cfg) {
  if (cfg.store_url.empty()) return cfg.max_pending_writes;
  // A PostgreSQL writer commits ~2-3 thousand requests a second here (2026-12-01: 0.37 ms a
  // request in a saturated group), an order of magnitude fewer than RocksDB's: 65,536 waiting
  // would be half a minute of backlog that every later request waits behind (logins time out
  // in it). At most 8,192 wait; beyond, BUSY at once.
  return std::min<std::size_t>(cfg.max_pending_writes, 8'192);
}

backends make_backends(const config& cfg, commit_observer on_commit) {
  backends out;
  out.store = make_store(cfg, std::move(on_commit));
  if (cfg.presence_url.empty()) {
    out.presence = std::make_unique<presence::local_presence>();
    out.bus = std::make_unique<bus::local_bus>();
    return out;
  }
  const auto url = redis::parse_url(cfg.presence_url);
  redis::client_options o;
  o.seed = url.seed;
  o.more_seeds = url.more_seeds;
  o.cluster = url.cluster;
  o.auth = url.auth;
  auto client = std::make_shared<redis::client>(o);
  bus::redis_bus_options b;
  b.node_id = cfg.node_id;
  b.ttl = cfg.presence_ttl;
  auto redis_bus = std::make_unique<bus::redis_bus>(client, b);
  out.presence = std::make_unique<presence::redis_presence>(*redis_bus, b.ttl);
  // Connects in the background: a Redis that is down is retried, and the node serves its own
  // users meanwhile.
  client->start();
  redis_bus->start();
  log_info() << "cluster node " << cfg.node_id << ": presence and routing on Redis "
             << url.seed.text() << (url.cluster ? " (cluster)" : "");
  out.bus = std::move(redis_bus);
  return out;
}

}  // namespace parley::server
