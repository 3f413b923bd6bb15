#include "server/backends.hpp"

#include "bus/local/local_bus.hpp"
#include "presence/local/local_presence.hpp"
#include "store/rocksdb/rocksdb_store.hpp"

namespace parley::server {

backends make_embedded_backends(const config& cfg, commit_observer on_commit) {
  store::rocksdb_options o;
  o.path = cfg.data_dir / "store";
  o.node_id = cfg.node_id;
  o.sync = cfg.fsync;
  o.reserve_bytes = cfg.storage_reserve_bytes;
  o.dedupe_window = std::chrono::hours(24 * cfg.dedupe_days);
  o.max_pending = cfg.max_pending_writes;
  o.memtable_budget_bytes = cfg.memtable_budget_bytes;
  o.on_commit = std::move(on_commit);
  return {std::make_unique<store::rocksdb_store>(std::move(o)),
          std::make_unique<presence::local_presence>(), std::make_unique<bus::local_bus>()};
}

}  // namespace parley::server
