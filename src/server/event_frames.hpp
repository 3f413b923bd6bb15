// Store events -> wire frames, and routing of committed deliveries to connected devices.
#pragma once

#include <vector>

#include "bus/bus.hpp"
#include "store/store.hpp"
#include "wire/frame_codec.hpp"

namespace parley::server {

wire::encoded_frame encode_event(const store::device_event& event);
store::event_id event_id_of(const store::device_event& event);

// Pushes each delivery to its device if connected. Call right after the commit, on the
// store's thread, so that each device sees its events in commit order.
void route_deliveries(bus::bus& bus, const std::vector<store::delivery>& deliveries);

}  // namespace parley::server
