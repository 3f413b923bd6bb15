// One simulated device of parley-bench: a WebSocket and a few counters, no SDK object (the
// generator holds thousands of these). Frames are built and parsed directly.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "client/ws_connection.hpp"
#include "parley/v1/frame.pb.h"

namespace parley::bench {

struct load_peer {
  explicit load_peer(boost::asio::any_io_executor ex)
      : ws(std::make_shared<client::ws_connection>(ex)) {}

  std::shared_ptr<client::ws_connection> ws;
  std::string username;
  std::uint64_t device = 0;
  std::string token;
  int in_flight = 0;                // requests sent, not answered
  std::vector<std::uint64_t> acks;  // events received, not acked yet
  std::uint64_t next_request = 1;

  void send(const parley::v1::Frame& f) { ws->send(f.SerializeAsString()); }
  void flush_acks();  // one Ack (request_id 0) for everything received
};

// Sends `request` and reads frames until its answer; pushes read meanwhile are dropped.
// Returns a Frame with no body on a broken connection.
boost::asio::awaitable<parley::v1::Frame> round_trip(load_peer& p, parley::v1::Frame request);

// Connects from `source` (127.0.0.x), optionally registers `p.username` first, authenticates,
// and reads until QueueEmpty. False on any failure.
boost::asio::awaitable<bool> set_up(load_peer& p, std::string url, std::string source,
                                    bool register_first);

// The n-th source address: 127.0.0.2 .. 127.0.0.254.
std::string source_address(std::size_t n);

}  // namespace parley::bench
