#include "ws/connection.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <exception>
#include <span>

#include "common/log.hpp"

namespace parley::ws {
namespace {

namespace asio = boost::asio;
using asio::awaitable;

// Reads land here first; a connection copies out only what must outlive the read. Allocated
// on a thread's first read, so threads that never read (the store's) carry none.
constexpr std::size_t thread_buffer_bytes = 64 * 1024;
char* thread_buffer() {
  thread_local std::unique_ptr<char[]> buffer(new char[thread_buffer_bytes]);
  return buffer.get();
}

// Runs `task` for `self`; a task that fails drops the connection instead of leaving it
// neither read nor written.
void spawn(const std::shared_ptr<connection>& self, awaitable<void> task) {
  asio::co_spawn(self->executor(), std::move(task), [self](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log_error() << "websocket connection task failed: " << ex.what();
    } catch (...) {
      log_error() << "websocket connection task failed";
    }
    self->abort();
  });
}

std::size_t heap_bytes(const std::string& s) {
  static const std::size_t inline_capacity = std::string().capacity();
  return s.capacity() > inline_capacity ? s.capacity() : 0;
}

void release(std::string& s) { std::string().swap(s); }

std::string close_payload(std::uint16_t code, std::string_view reason) {
  std::string p;
  p.push_back(static_cast<char>(code >> 8));
  p.push_back(static_cast<char>(code & 0xFF));
  std::size_t n = std::min(reason.size(), max_control_payload - 2);
  // Cut at a code point boundary, so that a long UTF-8 reason stays valid.
  if (n < reason.size())
    while (n > 0 && (static_cast<std::uint8_t>(reason[n]) & 0xC0) == 0x80) --n;
  p.append(reason.substr(0, n));
  return p;
}

}  // namespace

connection::connection(socket_type socket, const connection_options& options)
    : socket_(std::move(socket)), options_(options) {}

connection::~connection() {
  boost::system::error_code ignored;
  socket_.close(ignored);
}

void connection::start(std::string initial) {
  set_socket_options();
  in_ = std::move(initial);
  // Read before waiting: a client sends its first frame as soon as it has the 101, so it is
  // often here already. (Waiting first would also work: Asio re-arms the descriptor with
  // EPOLL_CTL_MOD for every wait, and the kernel then reports data that is already there.)
  spawn(shared_from_this(), read_burst(shared_from_this(), !in_.empty()));
}

void connection::set_socket_options() {
  // Failures only cost the early detection of dead peers or a packet per frame; the
  // connection works without them.
  boost::system::error_code ignored;
  socket_.non_blocking(true, ignored);
  socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
  socket_.set_option(asio::socket_base::keep_alive(true), ignored);
  const int fd = socket_.native_handle();
  const int idle = static_cast<int>(options_.keepalive_idle.count());
  const int interval = static_cast<int>(options_.keepalive_interval.count());
  const int probes = options_.keepalive_probes;
  const unsigned user_timeout_ms =
      static_cast<unsigned>(std::chrono::milliseconds(options_.user_timeout).count());
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

std::size_t connection::buffered_bytes() const {
  return heap_bytes(in_) + heap_bytes(message_) + heap_bytes(pong_) + heap_bytes(close_payload_);
}

// --- reading -------------------------------------------------------------------------------------

void connection::wait_readable() {
  socket_.async_wait(socket_type::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       if (self->done_) return;
                       if (ec) {
                         self->abort();
                         return;
                       }
                       spawn(self, read_burst(self, false));
                     });
}

awaitable<void> connection::read_burst(std::shared_ptr<connection> self, bool kept_first) {
  if (kept_first && !co_await self->consume(self->in_.data(), self->in_.size(), true)) co_return;
  // Read until the socket would block, so that one wake-up serves all that has arrived. A peer
  // that keeps sending never makes it block, so every few reads the burst yields to the other
  // connections of the thread (and to this one's writer).
  std::size_t reads = 0;
  for (;;) {
    if (++reads > self->options_.reads_per_turn) {
      reads = 1;
      co_await asio::post(self->executor(), asio::use_awaitable);
      if (self->done_) co_return;
    }
    char* buffer = thread_buffer();
    boost::system::error_code ec;
    const std::size_t n = self->socket_.read_some(asio::buffer(buffer, thread_buffer_bytes), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;
    if (ec) {  // end of stream without a close frame, or a reset
      self->abort();
      co_return;
    }
    bool go_on = false;
    if (self->in_.empty()) {
      go_on = co_await self->consume(buffer, n, false);
    } else {
      self->in_.append(buffer, n);
      go_on = co_await self->consume(self->in_.data(), self->in_.size(), true);
    }
    if (!go_on) co_return;
  }
  if (!self->done_) self->wait_readable();
}

void connection::keep_unparsed(const char* data, std::size_t pos, std::size_t size) {
  in_.assign(data + pos, size - pos);
}

awaitable<bool> connection::consume(char* data, std::size_t size, bool owned) {
  std::size_t pos = 0;
  bool delivered = false;  // a whole message was handled: progress
  while (!done_ && !close_received_ && !close_now_) {
    const std::string_view rest(data + pos, size - pos);
    const auto parsed = parse_client_header(rest, options_.max_message_bytes);
    if (parsed.status == parse_status::need_more) break;
    if (parsed.status == parse_status::invalid) {
      fail(parsed.error, parsed.reason);
      break;
    }
    const frame_header& h = parsed.header;
    if (h.op == opcode::continuation && assembling_ &&
        message_.size() + h.payload_size > options_.max_message_bytes) {
      fail(close_code::message_too_big, "message too big");
      break;
    }
    if (rest.size() - h.header_size < h.payload_size) break;  // the payload is still arriving

    const std::size_t payload_size = static_cast<std::size_t>(h.payload_size);
    const std::size_t payload_at = pos + h.header_size;
    std::size_t next = payload_at + payload_size;
    unmask(data + payload_at, payload_size, h.mask);
    // Before a handler that may suspend: the thread's buffer is reused meanwhile, so the bytes
    // from `from` on move into in_. Returns how far offsets moved (`next` is rebased here).
    auto keep_from = [&](std::size_t from) -> std::size_t {
      if (owned) return 0;
      keep_unparsed(data, from, size);
      data = in_.data();
      size = in_.size();
      owned = true;
      next -= from;
      return from;
    };

    switch (h.op) {
      case opcode::text:
        fail(close_code::unsupported_data, "only binary messages are accepted");
        break;
      case opcode::binary:
        if (assembling_) {
          fail(close_code::protocol_error, "a new message inside a fragmented one");
          break;
        }
        if (!h.fin) {
          message_.assign(data + payload_at, payload_size);
          assembling_ = true;
          break;
        }
        if (close_sent_) break;  // closing: the peer's late messages are not handled
        {
          const std::size_t moved = keep_from(pos);
          delivered = true;
          co_await on_message(std::string_view(data + payload_at - moved, payload_size));
        }
        break;
      case opcode::continuation:
        if (!assembling_) {
          fail(close_code::protocol_error, "a continuation frame without a message");
          break;
        }
        message_.append(data + payload_at, payload_size);
        if (!h.fin) break;
        assembling_ = false;
        if (!close_sent_) {
          keep_from(next);  // the message itself is in message_
          delivered = true;
          co_await on_message(message_);
        }
        release(message_);
        break;
      case opcode::ping:
        pong_.assign(data + payload_at, payload_size);
        pong_due_ = true;
        wake_writer();
        break;
      case opcode::pong:
        break;
      case opcode::close:
        on_close_frame(std::string_view(data + payload_at, payload_size));
        break;
    }
    pos = next;
  }

  if (done_ || close_received_ || close_now_) {  // reading is over
    release(in_);
    partial_timer_.reset();
    co_return false;
  }
  // Keep the unparsed tail (a partial frame) and nothing else.
  if (owned) {
    in_.erase(0, pos);
  } else if (pos < size) {
    keep_unparsed(data, pos, size);
  }
  if (in_.empty()) release(in_);
  if (in_.empty() && !assembling_) {
    partial_timer_.reset();  // nothing held: nothing to watch
  } else {
    // A message has started; it must be complete within message_timeout of the last one.
    if (delivered || !partial_timer_) partial_since_ = std::chrono::steady_clock::now();
    if (!partial_timer_) watch_partial(options_.message_timeout);
  }
  co_return true;
}

void connection::on_close_frame(std::string_view payload) {
  close_received_ = true;
  if (close_sent_) {
    // The answer to ours: the handshake is complete and the server hangs up, at once if our
    // close frame is out, or else once the writer has finished writing it.
    if (close_written_) abort();
    return;
  }
  close_code error = close_code::protocol_error;
  if (!valid_close_payload(payload, error)) {
    fail(error, "malformed close frame");
    return;
  }
  close_payload_.assign(payload.substr(0, 2));  // echo the peer's code
  close_now_ = true;
  arm_close_timer();
  wake_writer();
}

void connection::fail(close_code code, const char* reason) {
  if (done_) return;
  if (close_sent_) {
    abort();
    return;
  }
  close_payload_ = close_payload(static_cast<std::uint16_t>(code), reason);
  close_now_ = true;
  arm_close_timer();
  wake_writer();
}

// --- writing -------------------------------------------------------------------------------------

void connection::wake_writer() {
  if (writing_ || done_ || close_sent_) return;
  writing_ = true;
  spawn(shared_from_this(), write_loop(shared_from_this()));
}

void connection::close(std::uint16_t code, std::string_view reason) {
  if (done_ || close_wanted_ || close_now_ || close_sent_) return;
  close_wanted_ = true;
  close_payload_ = close_payload(code, reason);
  arm_close_timer();
  wake_writer();
}

awaitable<void> connection::write_loop(std::shared_ptr<connection> self) {
  constexpr std::size_t max_frames = max_batch_frames + 2;  // + a pong and a close
  std::array<std::array<char, max_server_header_bytes>, max_frames> headers;
  std::array<asio::const_buffer, 2 * max_frames> buffers;
  std::array<message, max_batch_frames> batch;
  std::string pong;
  std::string close;

  while (!self->done_) {
    std::size_t n_buffers = 0;
    std::size_t n_headers = 0;
    auto add = [&](opcode op, const std::string& payload) {
      const std::size_t header_size = write_server_header(op, payload.size(), headers[n_headers]);
      buffers[n_buffers++] = asio::buffer(headers[n_headers++].data(), header_size);
      if (!payload.empty()) buffers[n_buffers++] = asio::buffer(payload);
    };

    if (self->pong_due_) {
      pong = std::move(self->pong_);
      release(self->pong_);
      self->pong_due_ = false;
      add(opcode::pong, pong);
    }
    std::size_t n_batch = 0;
    bool drained = true;
    if (!self->close_now_) {
      drained = false;
      while (n_batch < max_batch_frames) {
        auto m = self->next_outgoing();
        if (!m) {
          drained = true;
          break;
        }
        batch[n_batch] = std::move(m);
        add(opcode::binary, *batch[n_batch]);
        ++n_batch;
      }
    }
    const bool send_close = self->close_now_ || (self->close_wanted_ && drained);
    if (send_close) {
      close = std::move(self->close_payload_);
      release(self->close_payload_);
      add(opcode::close, close);
      self->close_sent_ = true;
    }
    if (n_buffers == 0) break;

    auto [ec, written] = co_await asio::async_write(
        self->socket_, std::span<const asio::const_buffer>(buffers.data(), n_buffers),
        asio::as_tuple(asio::use_awaitable));
    for (std::size_t i = 0; i < n_batch; ++i) batch[i].reset();
    if (ec) {
      self->abort();
      break;
    }
    if (send_close) {
      self->close_written_ = true;
      // After a failure, an echoed close, or a close of ours the peer has answered meanwhile,
      // the server ends its side at once; otherwise it waits (bounded by the close timer) for
      // the peer's answer, read as usual.
      if (self->close_now_ || self->close_received_) self->linger();
      break;
    }
  }
  self->writing_ = false;
}

// --- closing -------------------------------------------------------------------------------------

void connection::linger() {
  if (done_) return;
  boost::system::error_code ignored;
  socket_.shutdown(socket_type::shutdown_send, ignored);
  spawn(shared_from_this(), discard_until_end(shared_from_this()));
}

awaitable<void> connection::discard_until_end(std::shared_ptr<connection> self) {
  // Reads first: the peer's end often comes right behind its close frame.
  std::size_t reads = 0;
  while (!self->done_) {
    boost::system::error_code ec;
    self->socket_.read_some(asio::buffer(thread_buffer(), thread_buffer_bytes), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      reads = 0;
      auto [wait_ec] = co_await self->socket_.async_wait(socket_type::wait_read,
                                                         asio::as_tuple(asio::use_awaitable));
      if (wait_ec && !self->done_) self->abort();
      continue;
    }
    if (ec) {  // the peer's end of stream: done
      self->abort();
      co_return;
    }
    if (++reads >= self->options_.reads_per_turn) {
      reads = 0;
      co_await asio::post(self->executor(), asio::use_awaitable);
    }
  }
}

void connection::watch_partial(std::chrono::steady_clock::duration wait) {
  if (!partial_timer_) partial_timer_ = std::make_unique<asio::steady_timer>(socket_.get_executor());
  partial_timer_->expires_after(wait);
  partial_timer_->async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->done_ || !self->partial_timer_) return;  // cancelled: the message completed
    const auto held = std::chrono::steady_clock::now() - self->partial_since_;
    if (held < self->options_.message_timeout) {
      self->watch_partial(self->options_.message_timeout - held);  // progress was made since
      return;
    }
    self->partial_timer_.reset();
    self->fail(close_code::policy_violation, "message not completed in time");
  });
}

void connection::arm_close_timer() {
  if (close_timer_ || done_) return;
  close_timer_ = std::make_unique<asio::steady_timer>(socket_.get_executor(), options_.close_timeout);
  close_timer_->async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->abort();
  });
}

void connection::abort() {
  if (done_) return;
  done_ = true;
  boost::system::error_code ignored;
  socket_.close(ignored);
  if (close_timer_) close_timer_->cancel();
  partial_timer_.reset();
  // in_ and message_ may be in use by a suspended read: they go with the object.
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->on_closed(); });
}

}  // namespace parley::ws
