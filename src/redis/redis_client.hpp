// A Redis client for the cluster's presence map and node bus, on hiredis 0.14 (Debian's; it
// has no cluster support and no RESP3, and Boost.Redis needs a newer Boost).
//
// Commands go over hiredis's asynchronous API, attached to an io_context of the client's own
// (one thread, "redis-io"): nothing here ever blocks a caller, and commands issued together
// are pipelined on the connection (hiredis writes them back to back). Subscriptions run on a
// thread each ("redis-sub"), on hiredis's plain API over poll(): hiredis 0.14's asynchronous
// API does not know sharded pub/sub (SSUBSCRIBE's pushes would be taken for replies).
//
// One Redis or a Redis Cluster. In a cluster, a command goes to the master of its key's hash
// slot (CRC16 of the key's {hash tag}, as Redis computes it): the slot map is read with
// CLUSTER SLOTS and corrected by MOVED replies; an ASK reply is followed once with ASKING.
// Channels are sharded (SPUBLISH / SSUBSCRIBE), each on the master of its slot.
//
// With credentials, each connection sends AUTH first (AUTH PASSWORD, or AUTH USER PASSWORD for
// a Redis 6+ ACL user) and counts as up only once Redis accepted it; a refusal is logged and
// the connection is tried again later.
//
// Connections that drop are opened again every reconnect_interval. While a connection is
// down, its commands fail at once (the handler gets nullopt): callers treat Redis as a
// best-effort accelerator over the durable chat log, never as the place of record.
//
// A Redis that goes silent (its host gone without a reset, a partition, a stopped process)
// is found within `timeout`: a connection counts as up only once Redis answered on it (PING,
// or AUTH); a command not answered within `timeout` (an idle connection is PINGed, so this
// covers it too) closes its connection, whose pending handlers get nullopt, and it is opened
// again; a subscription PINGs when it has heard nothing for a third of it, and one silent for
// all of it subscribes again. At most max_pending commands wait for replies on a connection;
// more fail at once.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace parley::redis {

struct reply {
  enum class kind { nil, status, error, integer, string, array };
  kind type = kind::nil;
  std::string str;  // status, error, string
  long long integer = 0;
  std::vector<reply> elements;
  bool is_error() const { return type == kind::error; }
  bool is_nil() const { return type == kind::nil; }
};

// nullopt: the command could not be sent or its connection was lost before the reply.
using reply_handler = std::function<void(std::optional<reply>)>;
using message_handler = std::function<void(std::string_view payload)>;

struct address {
  std::string host;
  std::uint16_t port = 6379;
  std::string text() const { return host + ":" + std::to_string(port); }
};

// redis://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...][?cluster=1] -> the addresses, the
// credentials (USER and PASSWORD percent-decoded: %40 for '@', %3A for ':'), `cluster`. More
// than one address only with cluster=1: the first is the seed, the others more nodes of the
// same cluster to learn the slot map from while it is down. Throws std::invalid_argument
// (whose text never holds the password).
struct credentials {
  std::string username;  // empty: Redis's default user (AUTH PASSWORD)
  std::string password;  // empty: no AUTH
};
struct url {
  address seed;
  std::vector<address> more_seeds;
  credentials auth;
  bool cluster = false;
};
url parse_url(const std::string& text);

// The hash slot of a key, as Redis Cluster computes it (CRC16-XMODEM of the {hash tag} if the
// key has a non-empty one, else of the whole key, mod 16384).
std::uint16_t key_slot(std::string_view key);

struct client_options {
  address seed;
  bool cluster = false;
  std::chrono::milliseconds reconnect_interval{500};
  // How long Redis may leave a command (or a connect, or a subscription's PING) unanswered
  // before its connection is taken as lost.
  std::chrono::milliseconds timeout{3000};
  std::size_t max_pending = 100'000;
  // Sent as AUTH first on every connection (to each node of a cluster, and each
  // subscription's); a connection is used only once it is accepted.
  credentials auth = {};
  // A cluster's other known nodes (url::more_seeds), connected at start like the seed, so that
  // the slot map is read from one of them while the seed is down.
  std::vector<address> more_seeds = {};
};

class client {
 public:
  explicit client(client_options options);
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // Starts the I/O thread and connects (in the background: a Redis that is down is retried).
  void start();
  // Closes every connection and joins the threads; pending handlers get nullopt. Idempotent.
  void stop();

  // Any thread. Sends `args` (a command and its arguments) to the node of `key`'s slot (any
  // node without a cluster). `done`, if set, runs on the I/O thread.
  void command(std::string_view key, std::vector<std::string> args, reply_handler done = {});
  // PUBLISH, or SPUBLISH in a cluster (routed by the channel's slot).
  void publish(const std::string& channel, std::string payload, reply_handler done = {});
  // Subscribes to `channel` until stop(), re-subscribing after every lost connection.
  // `on_message` runs on the subscription's thread; `on_subscribed` there too, each time the
  // subscription is in place, the first time included: what was published before it (before
  // the first one, or while it was lost) was missed. Call before start().
  void subscribe(std::string channel, message_handler on_message,
                 std::function<void()> on_subscribed = {});
  // Runs `fn` on the I/O thread (timers and state that the handlers share live there).
  void post(std::function<void()> fn);
  boost::asio::any_io_executor executor();
  // Called on the I/O thread when Redis comes up (a node's command connection answered,
  // none having been up), with true, and when it goes down (the last node's connection
  // lost), with false. One Redis: its one connection. A Redis Cluster: up while any node
  // is; a master that fails is followed to the replica that takes over (the slot map is read
  // again, from any node that is up, when a node is lost or a command finds none).
  // Call before start().
  void on_state(std::function<void(bool up)> fn);

  // Whether commands can be sent now (some node's connection is up). Any thread.
  bool connected() const;
  bool cluster() const;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace parley::redis
