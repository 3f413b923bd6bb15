// What every connection of one parleyd shares: configuration, the three backends, metrics.
// Owned by server; outlives every session.
#pragma once

#include <atomic>

#include "bus/bus.hpp"
#include "presence/presence.hpp"
#include "server/config.hpp"
#include "server/metrics.hpp"
#include "store/store.hpp"

namespace parley::server {

struct shared_state {
  config cfg;
  store::store& store;
  presence::presence& presence;
  bus::bus& bus;
  metrics& stats;
};

}  // namespace parley::server
