// One simulated device of parley-bench: a WebSocket and a few counters, no SDK object (the
// generator holds thousands of these). Frames are built and parsed directly.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "client/ws_connection.hpp"
#include "parley/v2/frame.pb.h"

namespace parley::bench {

struct load_peer {
  explicit load_peer(boost::asio::any_io_executor ex)
      : ws(std::make_shared<client::ws_connection>(ex)) {}

  std::shared_ptr<client::ws_connection> ws;
  std::string username;
  std::uint64_t device = 0;
  std::string token;
  int in_flight = 0;  // requests sent, not answered
  // The highest seq received per chat since the last flush_acks(), as (chat_id, seq): the
  // chats that had a message since then, so a few entries.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> acks;
  std::uint64_t next_request = 1;
  // What the last set_up() received before QueueEmpty: envelopes its drain pushed, and
  // Receipt entries (the watermarks that moved after the receipts stamp it presented; all of
  // the account's chats' with none).
  std::uint64_t drained = 0, receipts = 0;
  // The receipts stamp this device keeps across its sessions and presents as
  // Authenticate.receipts_since (0: none yet), as a real client does (frame.proto, QueueEmpty):
  // set_up() raises it at QueueEmpty to the highest of QueueEmpty.receipts_stamp and the
  // stamps of the Receipts before it; after QueueEmpty, each Receipts read raises it to its
  // stamp (keep_receipts_stamp). Never lowered.
  std::uint64_t receipts_stamp = 0;

  void send(const parley::v2::Frame& f) { ws->send(f.SerializeAsString()); }
  // Keeps `stamp` as receipts_stamp if higher: at QueueEmpty, or the stamp of a Receipts read
  // after it (0 on all but the last frame of a split change, so those keep nothing).
  void keep_receipts_stamp(std::uint64_t stamp);
  // Notes an envelope to ack. Messages of one chat arrive in seq order, so the latest seq of a
  // chat covers every earlier one.
  void received(std::uint64_t chat_id, std::uint64_t seq);
  // Acks everything received with cumulative cursors, one per chat, in one Ack frame
  // (request_id 0: no Ok comes back; more frames only past the server's 1,024 cursors per Ack).
  void flush_acks();
};

// Sends `request` and reads frames until its answer; pushes read meanwhile are dropped.
// Returns a Frame with no body on a broken connection.
boost::asio::awaitable<parley::v2::Frame> round_trip(load_peer& p, parley::v2::Frame request);

// Connects from `source` (127.0.0.x), optionally registers `p.username` first, authenticates
// presenting p.receipts_stamp, and reads until QueueEmpty (counting p.drained and p.receipts
// on the way, then keeping the session's receipts stamp). False on any failure. The envelopes
// of the drain are not acked; with `note_drain` each is noted (received()), so that the caller
// can see which chats it brought (p.acks) and ack them with flush_acks().
// A server address among several: `urls` may list the nodes of a cluster separated by spaces;
// connection `index` goes to node index % count (spreading a scenario's connections evenly).
inline std::string pick_url(const std::string& urls, std::size_t index) {
  std::vector<std::string> all;
  std::size_t start = 0;
  while (start < urls.size()) {
    const auto end = urls.find(' ', start);
    const auto stop = end == std::string::npos ? urls.size() : end;
    if (stop > start) all.push_back(urls.substr(start, stop - start));
    start = stop + 1;
  }
  return all.empty() ? urls : all[index % all.size()];
}

boost::asio::awaitable<bool> set_up(load_peer& p, std::string url, std::string source,
                                    bool register_first, bool note_drain = false);

// The n-th source address: 127.0.0.2 .. 127.0.0.254.
std::string source_address(std::size_t n);

}  // namespace parley::bench
