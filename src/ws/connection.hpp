// One server-side WebSocket connection (RFC 6455) after the opening handshake, on a TCP socket.
//
// Built lean for servers that hold many idle connections: an idle connection holds its socket,
// this object and one pending wait for readability, nothing else (no read buffer, no coroutine
// frame, no timer). Reads go through a buffer per thread; only bytes that must outlive one read
// (a partial frame, a fragmented message, a message whose handler is suspended) are copied into
// the connection, and released once handled. Dead peers are found by TCP keepalive and
// TCP_USER_TIMEOUT, which cost no memory here.
//
// Writes are batched: every message queued when the writer runs goes out in one gathered
// write (up to `max_batch_frames`), so a burst costs one system call, not one per message.
// The writer is a posted function, not a coroutine: it writes without blocking, and only when
// the socket is full does the unwritten rest of the batch move to the heap to wait for room.
// Reading is a posted function as well: a wake-up reads until the socket would block and hands
// each message to on_message() synchronously; only a message whose handling must wait (a
// hook that returns the rest of its work) costs a coroutine. A peer that sends without pause
// cannot hold the thread: after `reads_per_turn` reads the connection lets the thread's other
// work run before it reads again.
//
// Threading: everything runs on the socket's executor, which must be single-threaded (an
// io_context run by one thread); no member needs a lock.
//
// Derive from it and implement the three hooks; create it with std::make_shared.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "ws/frame.hpp"
#include "ws/tls_channel.hpp"

namespace parley::ws {

struct connection_options {
  std::size_t max_message_bytes = 256 * 1024;  // larger messages: close 1009
  // How long a close may take, from close() (or the peer's close, or a failure) until the TCP
  // connection is gone: flushing the queue, the close frame, the peer's answer.
  std::chrono::milliseconds close_timeout{5'000};
  // Once a message's first bytes are held, the message must be complete within this (counted
  // again from each message handled); a peer that stops half-way is closed with 1008, so that
  // no connection pins a partial message's memory for long.
  std::chrono::milliseconds message_timeout{60'000};
  // Reads (of up to 64 KiB each) before a busy connection lets the thread's other work run.
  std::size_t reads_per_turn = 4;
  // TCP keepalive: the first probe after this much silence, then every `keepalive_interval`;
  // `keepalive_probes` unanswered probes, or unacknowledged data older than `user_timeout`,
  // end the connection. This is how a dead peer is found without a timer per connection.
  std::chrono::seconds keepalive_idle{60};
  std::chrono::seconds keepalive_interval{10};
  int keepalive_probes = 6;
  std::chrono::seconds user_timeout{120};
};

class connection : public std::enable_shared_from_this<connection> {
 public:
  using socket_type = boost::asio::ip::tcp::socket;
  using message = std::shared_ptr<const std::string>;

  // `options` are shared by all the connections of a server, not copied: they must outlive
  // this connection.
  connection(socket_type socket, const connection_options& options);
  virtual ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // Starts reading. `initial` holds bytes read past the handshake request (normally none).
  // `tls`, if given, is the connection's TLS session (handshake done): every byte then goes
  // through it.
  void start(std::string initial = {}, std::unique_ptr<tls_channel> tls = nullptr);

  // The hooks have something to send: starts the writer if it is not running.
  void wake_writer();

  // Closes gracefully: what next_outgoing() still yields is written, then a close frame with
  // `code` (one a peer may receive: not 1005, 1006 or 1015) and `reason` (cut to 123 bytes),
  // then the peer's close frame is awaited. The whole close is bounded by close_timeout.
  // Messages received before our close frame is sent are still handled.
  void close(std::uint16_t code, std::string_view reason);
  void close(close_code code, std::string_view reason) {
    close(static_cast<std::uint16_t>(code), reason);
  }

  // Drops the TCP connection at once (nothing queued is written). on_closed() follows, posted
  // (never from inside abort), so a hook may call abort() safely.
  void abort();

  // Bytes this connection holds in its own buffers (not counting the socket's kernel buffers),
  // including a batch's unwritten rest while the socket is full: zero while idle. For tests
  // and introspection.
  std::size_t buffered_bytes() const;

  // The largest message accepted from now on (larger ones, or a header announcing one, close
  // the connection with 1009). Starts at connection_options::max_message_bytes.
  void set_max_message_bytes(std::size_t n) { max_message_bytes_ = n; }

  socket_type::executor_type executor() { return socket_.get_executor(); }
  socket_type& socket() { return socket_; }  // for socket options and introspection only

 protected:
  // One complete binary message; `bytes` are valid only during the call. Returns nothing when
  // the message is handled, or the rest of its handling: the connection runs that awaitable
  // to completion before it reads the next message (that is the backpressure), so it must own
  // what it needs of `bytes`. An exception from either drops the connection.
  virtual std::optional<boost::asio::awaitable<void>> on_message(std::string_view bytes) = 0;
  // The next message to send, or nullptr when there is none for now.
  virtual message next_outgoing() = 0;
  // The connection is gone: closed by either side or failed. Called once.
  virtual void on_closed() = 0;
  // The peer's close frame arrived (before ours): what next_outgoing() yields is still written
  // before the echo, so queue nothing more from now on. Called at most once.
  virtual void on_close_received() {}
  // buffered_bytes() may have changed: called after each read burst and each writer run.
  virtual void on_buffers_changed() {}

 private:
  static constexpr std::size_t max_batch_frames = 32;
  static constexpr std::size_t batches_per_turn = 4;

  void set_socket_options();
  // Waits until the socket is ready for reading (or, for TLS, for writing the record it owes
  // before it can read on), then reads a burst.
  void wait_to_read(socket_type::wait_type ready_for);
  // Reads until the socket would block (first consuming in_ if `kept_first`), then waits for
  // readability again; yields the thread after `reads_per_turn` reads. Catches what a hook
  // throws and drops the connection.
  void read_burst(bool kept_first);
  void read_until_blocked(bool kept_first);  // read_burst's body
  void post_read(bool kept_first);           // read_burst later, unless the connection is done
  // Parses and handles the frames in `data` (the thread's buffer, or in_ when `owned`).
  // Returns false when reading must stop, or pause while a message's rest runs.
  bool consume(char* data, std::size_t size, bool owned);
  // Runs a message's rest (see on_message), then reads on.
  static boost::asio::awaitable<void> finish_message(std::shared_ptr<connection> self,
                                                     boost::asio::awaitable<void> rest);
  // Leaves in_ holding the bytes [from, size) of `data` and nothing else (`owned`: data is
  // in_, else the thread's buffer, and in_ is empty).
  void keep_from(const char* data, std::size_t from, std::size_t size, bool owned);
  void on_close_frame(std::string_view payload);
  void fail(close_code code, const char* reason);
  // The frames of one gathered write and how much of them is written (defined in the .cpp).
  struct write_batch;
  // The writer: runs posted (so that everything queued meanwhile joins the batch) while
  // writing_ is set, writes batches until nothing is queued, and waits for the socket to
  // drain when it is full. Yields the thread after `batches_per_turn` batches.
  void flush();
  void write_batches(write_batch& spare);  // flush's body; throws only what a hook throws
  void post_flush();
  // Ends the writer's run: the batch being filled and a blocked rest are dropped.
  void stop_writing(write_batch& spare);
  // Fills `batch` from the hooks and the pending control frames; false if there is nothing.
  bool fill(write_batch& batch);
  std::size_t unwritten_bytes() const;
  void arm_close_timer();
  // Ends our side (FIN) and reads and drops what the peer still sends until it ends its side,
  // so that closing never resets a peer that has not read our close frame yet. Bounded by the
  // close timer.
  void linger();
  static boost::asio::awaitable<void> discard_until_end(std::shared_ptr<connection> self);
  // Fails the connection if the held partial message is not complete `wait` from now.
  void watch_partial(std::chrono::steady_clock::duration wait);

  // One read into `buffer` from the socket or through TLS: bytes, or would_block (wait for
  // `wait`), or the end (error or end of stream).
  struct read_outcome {
    std::size_t bytes = 0;
    bool would_block = false;
    socket_type::wait_type wait = socket_type::wait_read;
    bool ended = false;
  };
  read_outcome read_some(char* buffer, std::size_t size);
  // Writes the unwritten rest of `b` through TLS; false if the connection failed. Leaves
  // b.written short of b.total when TLS must wait (`wait` says for what).
  bool write_tls(write_batch& b, socket_type::wait_type& wait);

  socket_type socket_;
  const connection_options& options_;
  std::size_t max_message_bytes_;
  std::unique_ptr<tls_channel> tls_;  // nullptr: plain TCP
  std::string in_;                    // bytes kept between reads: empty (no allocation) while idle
  std::string message_;               // a fragmented message being assembled
  std::string pong_;                  // payload of the ping to answer (only the latest is answered)
  std::string close_payload_;         // the close frame to send, once closing
  std::unique_ptr<boost::asio::steady_timer> close_timer_;    // only while closing
  std::unique_ptr<boost::asio::steady_timer> partial_timer_;  // only while a message is held
  std::unique_ptr<write_batch> blocked_;  // only while the socket is full: the batch's rest
  std::chrono::steady_clock::time_point partial_since_;
  bool assembling_ = false;  // a fragmented message is open
  bool pong_due_ = false;
  bool writing_ = false;
  // Our side of the closing handshake. The states only move forward, and each implies the
  // ones before it, so `state_ >= close_state::sent` reads "our close frame is out of reach".
  enum class close_state : std::uint8_t {
    open,     // no close wanted yet
    wanted,   // a close frame goes after the queue (or at once when failing_)
    sent,     // our close frame is in the writer's hands
    written,  // ... and written
    done,     // the TCP connection is gone; on_closed() follows, posted
  };
  bool done() const { return state_ == close_state::done; }

  close_state state_ = close_state::open;
  // The close is for a failure (the peer broke the rules or stalled): the close frame skips
  // the queue, nothing more is read, and the server hangs up right after writing it.
  bool failing_ = false;
  bool close_received_ = false;  // the peer's close frame arrived (at any state)
};

}  // namespace parley::ws
