// The three backends a parleyd runs on, behind their interfaces: the store, presence and the
// bus. The server sees only the interfaces; which implementations are built is decided here.
// Embedded (the default): RocksDB under the data directory, presence and routing in this
// process. Cluster: the store on PostgreSQL (config::store_url); presence and routing in Redis
// (config::presence_url) when given, else in this process (one node on a shared store).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>

#include "bus/bus.hpp"
#include "presence/presence.hpp"
#include "server/config.hpp"
#include "store/store.hpp"

namespace parley::server {

struct backends {
  std::unique_ptr<store::store> store;
  std::unique_ptr<presence::presence> presence;
  std::unique_ptr<bus::bus> bus;
};

// Called on the store's writer after each group commit: its latency and request count.
using commit_observer = std::function<void(std::chrono::nanoseconds, std::size_t)>;

// How many write requests may wait for the store's writers together (beyond: BUSY):
// `storage.max_pending_writes`, but at most 8,192 on a PostgreSQL store.
[[nodiscard]] std::size_t store_max_pending(const config& cfg);

// The backends `cfg` names. Throws std::runtime_error if the store cannot be opened.
backends make_backends(const config& cfg, commit_observer on_commit);

}  // namespace parley::server
