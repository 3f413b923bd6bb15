// What every connection of one parleyd shares: configuration, the three backends, metrics.
// Owned by server; outlives every session.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "bus/bus.hpp"
#include "presence/presence.hpp"
#include "server/admission.hpp"
#include "server/config.hpp"
#include "server/delivery_lane.hpp"
#include "server/group_receipts.hpp"
#include "server/media_service.hpp"
#include "server/metrics.hpp"
#include "server/rate_limiter.hpp"
#include "server/tls_context.hpp"
#include "store/store.hpp"
#include "ws/connection.hpp"

namespace parley::server {

struct shared_state {
  config cfg;
  store::store& store;
  presence::presence& presence;
  bus::bus& bus;
  metrics& stats;
  ws::connection_options websocket;  // one copy for every connection (from cfg)
  admission& admit;
  request_limiters& limiters;
  tls_context* tls;  // nullptr: plain ws:// and http:// on the main address
  // One per I/O thread (server owns them): see delivery_lane.
  std::vector<std::unique_ptr<delivery_lane>>& lanes;
  // Merges groups' receipts (server owns it).
  group_receipts& groups;
  // Signs media URLs (server owns it).
  media_service& media;

  // The lane of the I/O thread that runs `executor`.
  delivery_lane& lane_for(const boost::asio::any_io_executor& executor) {
    for (auto& l : lanes) {
      if (l->executor() == executor) return *l;
    }
    return *lanes.front();  // not reached: every session runs on one of the I/O threads
  }
};

// The WebSocket options `cfg` implies.
inline ws::connection_options websocket_options(const config& cfg) {
  ws::connection_options o;
  o.max_message_bytes = cfg.limits.max_frame_bytes;
  return o;
}

}  // namespace parley::server
