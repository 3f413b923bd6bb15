// The Bus: hands frames to the connection of a device, wherever it is connected.
//
// Embedded: bus/local/local_bus (every device is on this process). Cluster: bus/redis/redis_bus
// (a Redis pub/sub channel per node, one message per target node per fan-out).
//
// Delivery through the bus is best-effort and at-most-once: messages are already durable in
// the chat log (the Store), so a device that misses a push gets the message on its next drain
// (its cursor has not moved), and a receipt it misses on its next authentication (the current
// watermarks). Ephemeral frames (typing, presence) are simply lost if the device is not
// connected.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "store/store.hpp"
#include "wire/frame_codec.hpp"

namespace parley::bus {

using device_id = std::uint64_t;

// A chat-log entry on its way to devices: the stored entry, and its Envelope frame, encoded
// once (by the first connection thread that sends it) and shared by every recipient.
class envelope {
 public:
  explicit envelope(store::shared_message message) : message_(std::move(message)) {}
  const store::chat_message& message() const { return *message_; }
  // Thread-safe; encodes on first use.
  const wire::encoded_frame& frame() const;

 private:
  store::shared_message message_;
  mutable std::once_flag encoded_;
  mutable wire::encoded_frame frame_;
};
using shared_envelope = std::shared_ptr<const envelope>;

// A chat-log entry as the wire's Envelope (pushes, drains and History pages alike).
void to_wire(const store::chat_message& m, parley::v2::Envelope& e);
// The push of a chat-log entry, encoded: Frame{envelope}, request_id 0.
std::string encode_envelope(const store::chat_message& m);

// Each device's share of `receipts`, devices in order of first appearance, marks in the order
// given: one push per device.
std::vector<std::pair<std::uint64_t, std::vector<store::watermark>>> receipts_by_device(
    const std::vector<store::receipt_delivery>& receipts);

// Receipts frames carry at most this many watermarks each (docs/protocol.md, "Receipts").
inline constexpr std::size_t receipts_per_frame = 256;

// `marks` as Receipts pushes of at most receipts_per_frame watermarks each, in the order given.
// The highest stamp of the marks goes on the last frame only: a client that keeps it has had
// every frame of the change (docs/protocol.md, "Receipts stamps").
std::vector<wire::encoded_frame> receipts_frames(const std::vector<store::watermark>& marks);

// A connected device. Methods may be called from any thread and must not block: an
// implementation hands the work to its own executor.
class endpoint {
 public:
  virtual ~endpoint() = default;
  // A message appended to one of the device's chats (committed).
  virtual void push_message(shared_envelope e) = 0;
  // Watermarks of other members that moved (committed).
  virtual void push_receipts(std::vector<store::watermark> marks) = 0;
  // A frame that is never stored (typing, presence).
  virtual void push_ephemeral(wire::encoded_frame frame) = 0;
  // Another connection authenticated as the same device: this one must close.
  virtual void replaced() = 0;
  // Pushes to this device may have been lost (the cluster's bus was unreachable): read the
  // chat log above what it was sent again.
  virtual void resync() = 0;
  // Pushes to this device may be lost from now on (the cluster's bus is unreachable) until
  // the next resync(): a message of a chat whose previous seq the connection has not seen
  // itself must not be pushed as if nothing came before it.
  virtual void pushes_may_be_lost() = 0;
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

  // Pushes a committed message to those of `devices` that are connected. Call in commit order
  // (from the store's completion), so that each device sees a chat's messages in seq order.
  virtual void deliver_message(const std::vector<device_id>& devices, shared_envelope e) = 0;
  // Pushes receipts: each device's share of `receipts` as one merged push per device.
  virtual void deliver_receipts(const std::vector<store::receipt_delivery>& receipts) = 0;
  // An ephemeral frame to every connected device of `username`.
  virtual void deliver_ephemeral(const std::string& username, wire::encoded_frame frame) = 0;

  virtual std::size_t connected_devices() const = 0;

  // Whether every push of a chat reaches the device's current endpoint in seq order, none
  // lost, from the device's first drain on (one process: true). False on a cluster: a push
  // may go to the node the device just left, and pushes from different nodes may overtake
  // each other, so a chat's first push on a connection is checked against the device's
  // cursor before it is sent (device_session).
  virtual bool pushes_in_commit_order() const = 0;

  // Stops: once it returns, no thread of the bus's own calls an endpoint (a cluster's Redis
  // threads are joined). Called at shutdown before the endpoints' I/O threads stop; what is
  // delivered through the bus afterwards is dropped. Idempotent.
  virtual void stop() = 0;
};

}  // namespace parley::bus
