// The cluster's Bus: frames for devices connected to other parleyd nodes go over Redis.
//
// Routing map: "parley:conn:{d<device>}" -> the node id holding the device's connection, set
// (SET ... EX ttl GET) when the device authenticates here, refreshed every ttl / 3 for every
// device connected here (only while the key is missing or still names this node), and
// deleted when the connection closes (only if it still names this node). A node that dies
// stops refreshing, so its entries expire after the TTL. The key's {hash tag} keeps each
// device's key on one slot of a Redis Cluster.
//
// Delivery: devices connected here are pushed at once, without Redis. For the others, their
// keys are read in one pipelined burst (a GET each, back to back on the connection: a
// group's fan-out costs one round trip per Redis node, not one per member), grouped by node,
// and each node gets one NodeMessage (bus.proto) on its channel "parley:node:{N}" carrying
// every recipient there. Best-effort, like the bus contract: the chat log holds the message
// and the recipient's cursor has not moved, so a push lost here (Redis down, a node that
// just lost the device) reaches the device on its next drain. When this node's Redis
// connection or subscription comes back after a loss, every device connected here is told
// to resync (endpoint::resync: read the log above its cursor again), so messages sent
// meanwhile flow without a reconnect.
//
// A device that authenticates here while its routing key names another node: that node is
// told (replaced_device), and closes the older connection with 4001, as one node does. That
// message is best-effort too, so the refresh checks as well: a key that names another node
// (and no attach of the device here is on its way to Redis) means the device moved, and the
// connection here is closed with 4001 at the next refresh.
//
// Everything that every node must see (presence, ephemeral frames for a user) goes on
// "parley:all".
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "bus/bus.hpp"
#include "bus/device_registry.hpp"
#include "redis/redis_client.hpp"

namespace parley::bus::v1 {
class NodeMessage;
class PresenceState;
}  // namespace parley::bus::v1

namespace parley::bus {

struct redis_bus_options {
  std::uint64_t node_id = 0;
  // How long a routing entry (and a presence announcement) lives without a refresh: a node
  // that dies is forgotten after it. Refreshed every ttl / 3.
  std::chrono::seconds ttl{30};
};

class redis_bus final : public bus {
 public:
  // Subscribes on `client` (before it starts: call start() on the client afterwards).
  redis_bus(std::shared_ptr<redis::client> client, redis_bus_options options);
  ~redis_bus() override;

  void attach(device_id device, const std::string& username, std::shared_ptr<endpoint> ep) override;
  void detach(device_id device, const endpoint* ep) override;
  void deliver_message(const std::vector<device_id>& devices, shared_envelope e) override;
  void deliver_receipts(const std::vector<store::receipt_delivery>& receipts) override;
  void deliver_ephemeral(const std::string& username, wire::encoded_frame frame) override;
  std::size_t connected_devices() const override;
  bool pushes_in_commit_order() const override { return false; }  // see bus::pushes_in_commit_order

  // Presence rides on "parley:all" (presence/redis/redis_presence). `on_presence` gets every
  // other node's announcements (on the subscription's thread); `publish_full_presence` is
  // called at every refresh while Redis is up, to publish this node's full list
  // (publish_presence with `full`). Set both before the client starts.
  using presence_handler = std::function<void(std::uint64_t from_node, bool full,
                                              const std::vector<v1::PresenceState>& states)>;
  void set_presence(presence_handler on_presence, std::function<void()> publish_full_presence,
                    std::function<void(std::chrono::steady_clock::time_point)> on_refresh);
  // Announces this node's presence changes to every node; with `full`, `states` is the list
  // of every user online here (empty: none), and the others went offline here. Published in
  // the order of the calls: a caller that decides what to publish under a lock publishes
  // under it too, or a list taken earlier could overtake a change made since.
  void publish_presence(std::vector<v1::PresenceState> states, bool full = false);

  // Starts the refresh timer (after the client started). stop() ends it and stops the client
  // (bus::stop); the destructor stops too.
  void start();
  void stop() override;

  std::uint64_t node_id() const { return options_.node_id; }

 private:
  struct state;

  void on_message(std::string_view payload);
  void publish_to(std::uint64_t node, const v1::NodeMessage& m);
  void refresh();
  void arm_refresh();
  void resync_all(const char* why);
  // Reads the routing keys of `devices` (pipelined); calls `done` on the Redis thread with
  // each device's node (none where no node is known).
  void lookup(
      std::vector<device_id> devices,
      std::function<void(std::vector<std::pair<device_id, std::optional<std::uint64_t>>>)> done);

  std::shared_ptr<redis::client> client_;
  redis_bus_options options_;
  std::shared_ptr<state> state_;
  device_registry devices_;  // the devices connected to this node, with their attach times
  // Devices whose attach's SET has not been answered yet (any thread, under the mutex): a
  // refresh that finds another node in the key meanwhile may have overtaken that SET.
  std::mutex attaching_mutex_;
  std::unordered_map<device_id, unsigned> attaching_;
  presence_handler on_presence_;
  std::function<void()> publish_full_presence_;
  std::function<void(std::chrono::steady_clock::time_point)> on_refresh_;
};

// The routing key of a device, and a node's channel.
std::string device_key(device_id device);
std::string node_channel(std::uint64_t node);
inline constexpr const char* all_channel = "parley:all";

}  // namespace parley::bus
