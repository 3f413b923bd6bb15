// The protocol state of one connection: authentication, request dispatch, the drain of the
// chat log above the device's cursors, live pushes, and the bounded outgoing queue. No Beast here: websocket_session feeds
// frames in (handle_frame) and writes what pop_outgoing() yields.
//
// Threading: every member function except the bus::endpoint overrides runs on the
// connection's executor (one io_context thread), so no member needs a lock. The endpoint
// overrides may be called from any thread and only post to that executor.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bus/bus.hpp"
#include "server/delivery_lane.hpp"
#include "server/shared_state.hpp"
#include "wire/frame_codec.hpp"

namespace parley::server {

enum class close_reason {
  protocol_violation,  // too many bad frames or failed authentications: close code 1008
  auth_timeout,        // no Authenticate in time: 1008
  slow_reader,         // outgoing queue full: the TCP connection is dropped at once
  replaced,            // the same device connected again: 4001
  internal,            // the store failed while draining: 1011
};

class device_session final : public bus::endpoint,
                             public std::enable_shared_from_this<device_session> {
 public:
  // `close` asks the transport to end the connection; it is called at most once, on the
  // session's executor. `wake_writer` tells the transport that pop_outgoing() has something
  // (or that the session is finishing); it is called on the session's executor.
  // `peer_address` (the client's IP address as text) keys the per-address rate limits.
  device_session(shared_state& state, boost::asio::any_io_executor executor,
                 std::string peer_address, std::function<void(close_reason)> close,
                 std::function<void()> wake_writer);

  // Handles one received WebSocket message; `bytes` are not used after it returns. Requests
  // that wait on the store run concurrently (up to max_in_flight) and it returns nothing.
  // Before authentication, Register and Authenticate are handled one at a time: it returns
  // the rest of their handling, which the caller runs to completion before the next frame.
  std::optional<boost::asio::awaitable<void>> handle_frame(std::string_view bytes);
  // After a frame is handled, once authenticated: while the outgoing queue, with the bytes
  // promised to History answers under way, is above half its limits, a wait until it is not,
  // which the caller runs before it reads the next frame. A client that pipelines requests
  // with large answers and reads them later is then slowed by TCP instead of being closed as
  // a slow reader; one that never reads is closed by the pushes that do not wait.
  std::optional<boost::asio::awaitable<void>> read_pause();

  // The next frame to write, or nullptr when there is none (or the session is closed).
  wire::encoded_frame pop_outgoing();
  // Frames queued behind the ones popped so far.
  std::size_t outgoing_frames() const { return outgoing_.size() - outgoing_head_; }
  std::size_t outgoing_bytes() const { return outgoing_bytes_; }

  // The connection is closing: what is queued is still written, nothing more is queued.
  void finish();
  bool finishing() const { return finishing_; }

  // The transport is gone. Detaches from the bus and presence; drops what is queued.
  void closed();

  bool authenticated() const { return device_ != 0; }

  // bus::endpoint
  void push_message(bus::shared_envelope e) override;
  void push_receipts(std::vector<store::watermark> marks) override;
  void push_ephemeral(wire::encoded_frame frame) override;
  void replaced() override;
  void resync() override;
  void pushes_may_be_lost() override;

 private:
  using frame = parley::v2::Frame;

  boost::asio::awaitable<void> on_register(std::uint64_t request_id, parley::v2::Register r);
  boost::asio::awaitable<void> on_authenticate(std::uint64_t request_id,
                                               parley::v2::Authenticate a);
  boost::asio::awaitable<void> run_request(frame request);
  // The message path without a coroutine: the store's completion hands the answer to this
  // connection's delivery lane.
  // Takes the strings out of `m` (a request in the scratch arena: see handle_frame).
  void on_send(std::uint64_t request_id, parley::v2::SendMessage& m);
  void on_ack(std::uint64_t request_id, const parley::v2::Ack& a);
  void answer_send(std::uint64_t request_id, const store::result<store::send_outcome>& r);
  void request_done();
  // After authentication: the chats behind, the watermarks that moved after `receipts_since`
  // (the client's receipts stamp), then QueueEmpty with the new stamp.
  boost::asio::awaitable<void> drain(std::uint64_t receipts_since);
  // Sends the entries of one chat above `from` (up to `head`); the number sent, or nullopt if
  // the connection closed or the store failed (the connection is then closed).
  boost::asio::awaitable<std::optional<std::uint64_t>> drain_chat(store::chat_position p);
  boost::asio::awaitable<void> on_subscribe(std::uint64_t request_id,
                                            parley::v2::SubscribePresence s);
  boost::asio::awaitable<void> on_typing(std::uint64_t request_id, parley::v2::Typing t);
  // Whether this account shares a chat with `username` (cached once true: a chat is never
  // deleted). False on a store error too: presence and typing fail closed.
  boost::asio::awaitable<std::vector<bool>> shares_chat_with(std::vector<std::string> names);
  boost::asio::awaitable<parley::v2::Frame> unknown_member_error(
      std::uint64_t request_id, google::protobuf::RepeatedPtrField<std::string> members);
  // A token from `limiter` for `key`, or an Error{RATE_LIMITED, retry_after_ms} answered to
  // `request_id` (and false).
  bool within_rate(rate_limiter& limiter, std::string_view key, std::uint64_t request_id,
                   const char* what);
  void refuse_rate(std::uint64_t request_id, std::chrono::milliseconds wait, const char* what);
  void log_auth_failure(std::uint64_t device_id);
  std::string device_key() const;

  void on_message(const bus::shared_envelope& e);
  // Whether seq `seq` of `chat` follows what this connection has seen of the chat (pushed, or
  // its own): the next seq, or, when unknown here and the bus is not losing pushes, any.
  bool follows(std::uint64_t chat, std::uint64_t seq) const;
  // A drain pass as after authentication (a running one reads again): what is above the
  // device's cursor and not pushed yet, in order.
  void read_log_again();
  // This device's own message at `seq` (never pushed to it): the chat's seen prefix moves
  // past it if it comes right after.
  void saw_own(std::uint64_t chat, std::uint64_t seq);
  void on_receipts(const std::vector<store::watermark>& marks);
  // The highest seq of `chat` pushed on this connection (0: none yet), and recording one.
  std::uint64_t pushed(std::uint64_t chat) const;
  void set_pushed(std::uint64_t chat, std::uint64_t seq);
  // The chat's entry in pushed_ (a seq or checking_mark), nullptr if it has none.
  const std::uint64_t* pushed_entry(std::uint64_t chat) const;
  // A chat's first push on this connection, on a cluster (bus::pushes_in_commit_order false):
  // sent only if it follows the device's cursor (store::device_cursor); else, or if more of
  // the chat's pushes came meanwhile (held back: `recheck_`), a drain pass sends them in
  // order. While the cursor is read, the chat's pushed_ entry holds checking_mark.
  boost::asio::awaitable<void> check_first_push(bus::shared_envelope e);
  bool checking(std::uint64_t chat) const;
  static constexpr std::uint64_t checking_mark = UINT64_MAX;
  // This connection's I/O thread's lane (looked up, not stored: one pointer less per
  // connection; there are as many lanes as I/O threads).
  delivery_lane& lane() const { return state_.lane_for(executor_); }

  // Queues a frame; false (and the connection is closed as a slow reader) if the queue is full.
  bool send(const frame& f);
  bool send_encoded(wire::encoded_frame f);
  // Waits until the queue is below half its limits (the drain paces itself there, so that
  // responses and pongs sent during a drain always find room); false if closed.
  boost::asio::awaitable<bool> send_paced(wire::encoded_frame f);
  bool has_room(std::size_t bytes) const;
  bool below_drain_watermark(std::size_t bytes) const;
  bool read_room() const;
  boost::asio::awaitable<void> wait_below_watermark();
  // Waits until something may have made room in the queue (room_ready_ cancelled).
  boost::asio::awaitable<void> room_made();
  // The most a History answer can take: max_history_bytes of payload and the fields of its
  // messages (at most 100, and one group's member list).
  std::size_t history_answer_bytes() const;
  void release_answer_bytes(std::size_t bytes);
  void reject(std::uint64_t request_id, parley::v2::ErrorCode code, std::string message);
  void close(close_reason reason);

  shared_state& state_;
  boost::asio::any_io_executor executor_;
  std::string peer_address_;
  std::function<void(close_reason)> close_;
  std::function<void()> wake_writer_;
  bool closed_ = false;
  bool finishing_ = false;

  // Identity, once authenticated.
  std::uint64_t device_ = 0;
  std::uint64_t user_ = 0;
  std::string username_;
  int auth_failures_ = 0;
  std::size_t bad_frames_ = 0;  // consecutive
  std::size_t in_flight_ = 0;
  std::size_t answer_bytes_promised_ = 0;  // History requests under way (read_pause)
  std::optional<std::uint64_t> presence_subscription_;
  std::uint64_t subscribe_requests_ = 0;  // SubscribePresence requests received (on_subscribe)
  // Users this account shares a chat with, as learned (bounded: cleared past 1,024 names).
  std::vector<std::string> contacts_;

  // Delivery: during the drain, live pushes only mark `dirty_` (the drain reads them from the
  // store); afterwards, a push of a chat at or below pushed_[chat] was already sent. Filtered
  // per chat by seq, never by comparing message ids (whose clocks may differ across nodes).
  bool draining_ = false;
  bool dirty_ = false;
  // The bus may be losing pushes (pushes_may_be_lost, until the next resync): a chat's push
  // is sent only right after one this connection sent (or its own message), else read again
  // from the log.
  bool unsure_ = false;
  // A push of a chat being checked (check_first_push) came and was held back.
  bool recheck_ = false;
  // (chat, seq) sorted by chat, allocated on the first push: an idle connection holds one
  // pointer (8 bytes), not an empty vector (24) or hash map (56).
  std::unique_ptr<std::vector<std::pair<std::uint64_t, std::uint64_t>>> pushed_;

  // The outgoing queue: a vector read from outgoing_head_, so that an idle connection holds no
  // allocation (std::deque allocates a 512-byte block up front).
  std::vector<wire::encoded_frame> outgoing_;
  std::size_t outgoing_head_ = 0;
  std::size_t outgoing_bytes_ = 0;
  // Cancelled when a frame leaves the queue; created only when a drain finds the queue full,
  // so an idle session holds no timer.
  std::unique_ptr<boost::asio::steady_timer> room_ready_;
};

}  // namespace parley::server
