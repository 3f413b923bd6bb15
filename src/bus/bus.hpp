// The Bus: hands frames to the connection of a device, wherever it is connected.
//
// Embedded: bus/local/local_bus (every device is on this process). Cluster (later): a Redis
// pub/sub channel per node, batched per node.
//
// Delivery through the bus is best-effort and at-most-once: queued events are already durable
// in the device queue (the Store), so a device that misses a push gets the event on its next
// drain. Ephemeral frames (typing, presence) are simply lost if the device is not connected.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "wire/frame_codec.hpp"

namespace parley::bus {

using device_id = std::uint64_t;
using event_id = std::uint64_t;

// A connected device. Methods may be called from any thread and must not block: an
// implementation posts to its own executor.
class endpoint {
 public:
  virtual ~endpoint() = default;
  // An event of the device queue, committed; `event` orders it within that queue.
  virtual void push_event(event_id event, wire::encoded_frame frame) = 0;
  // A frame that is never stored (typing, presence).
  virtual void push_ephemeral(wire::encoded_frame frame) = 0;
  // Another connection authenticated as the same device: this one must close.
  virtual void replaced() = 0;
};

class bus {
 public:
  virtual ~bus() = default;

  // Routes the device's frames to `ep` from now on. If another endpoint was attached for the
  // same device it is detached and told replaced(). Thread-safe.
  virtual void attach(device_id device, const std::string& username,
                      std::shared_ptr<endpoint> ep) = 0;
  // Detaches `ep` if it is still the device's endpoint. Thread-safe.
  virtual void detach(device_id device, const endpoint* ep) = 0;

  virtual void deliver(device_id device, event_id event, wire::encoded_frame frame) = 0;
  // An ephemeral frame to every connected device of `username`.
  virtual void deliver_ephemeral(const std::string& username, wire::encoded_frame frame) = 0;

  virtual std::size_t connected_devices() const = 0;
};

}  // namespace parley::bus
