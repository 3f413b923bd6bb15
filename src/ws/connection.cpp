#include "ws/connection.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <exception>

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

// Logs `e` (what a hook threw) under `what`; the caller then drops the connection.
void log_failure(const char* what, std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log_error() << what << ": " << ex.what();
  } catch (...) {
    log_error() << what;
  }
}

// Runs `task` for `self`; a task that fails drops the connection instead of leaving it
// neither read nor written.
void spawn(const std::shared_ptr<connection>& self, awaitable<void> task) {
  asio::co_spawn(self->executor(), std::move(task), [self](std::exception_ptr e) {
    if (!e) return;
    log_failure("websocket connection task failed", e);
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
    : socket_(std::move(socket)),
      options_(options),
      max_message_bytes_(options.max_message_bytes) {}

connection::~connection() {
  boost::system::error_code ignored;
  socket_.close(ignored);
}

void connection::start(std::string initial, std::unique_ptr<tls_channel> tls) {
  set_socket_options();
  in_ = std::move(initial);
  tls_ = std::move(tls);
  // Read before waiting: a client sends its first frame as soon as it has the 101, so it is
  // often here already. (Waiting first would also work: Asio re-arms the descriptor with
  // EPOLL_CTL_MOD for every wait, and the kernel then reports data that is already there.)
  // Posted, so that no hook runs before the caller of start() is done.
  post_read(!in_.empty());
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
  return heap_bytes(in_) + heap_bytes(message_) + heap_bytes(pong_) + heap_bytes(close_payload_) +
         unwritten_bytes();
}

// --- reading -------------------------------------------------------------------------------------

void connection::wait_to_read(socket_type::wait_type ready_for) {
  socket_.async_wait(ready_for, [self = shared_from_this()](const boost::system::error_code& ec) {
    if (self->done()) return;
    if (ec) {
      self->abort();
      return;
    }
    self->read_burst(false);
  });
}

void connection::read_burst(bool kept_first) {
  try {
    read_until_blocked(kept_first);
    on_buffers_changed();
  } catch (...) {  // from a hook: drop this connection only
    log_failure("websocket read failed", std::current_exception());
    abort();
  }
}

void connection::read_until_blocked(bool kept_first) {
  if (kept_first && !consume(in_.data(), in_.size(), true)) return;
  // Read until the socket would block, so that one wake-up serves all that has arrived. A peer
  // that keeps sending never makes it block, so every few reads the burst yields to the other
  // connections of the thread (and to this one's writer).
  auto ready_for = socket_type::wait_read;  // TLS may need to write before it can read on
  for (std::size_t reads = 1;; ++reads) {
    if (reads > std::max<std::size_t>(options_.reads_per_turn, 1)) {
      post_read(false);
      return;
    }
    char* buffer = thread_buffer();
    const auto got = read_some(buffer, thread_buffer_bytes);
    if (got.would_block) {
      ready_for = got.wait;
      break;
    }
    if (got.ended) {  // end of stream without a close frame, or a reset
      abort();
      return;
    }
    const std::size_t n = got.bytes;
    bool go_on = false;
    if (in_.empty()) {
      go_on = consume(buffer, n, false);
    } else {
      in_.append(buffer, n);
      go_on = consume(in_.data(), in_.size(), true);
    }
    if (!go_on) return;
  }
  if (!done()) wait_to_read(ready_for);
}

connection::read_outcome connection::read_some(char* buffer, std::size_t size) {
  if (tls_) {
    const auto r = tls_->read(buffer, size);
    switch (r.state) {
      case tls_channel::status::ok:
        return {r.bytes};
      case tls_channel::status::want_read:
        return {0, true, socket_type::wait_read};
      case tls_channel::status::want_write:
        return {0, true, socket_type::wait_write};
      case tls_channel::status::failed:
        log_debug() << "TLS read failed: " << tls_->error_text();
        return {0, false, socket_type::wait_read, true};
      case tls_channel::status::closed:
        return {0, false, socket_type::wait_read, true};
    }
  }
  boost::system::error_code ec;
  const std::size_t n = socket_.read_some(asio::buffer(buffer, size), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) return {0, true};
  if (ec) return {0, false, socket_type::wait_read, true};
  return {n};
}

awaitable<void> connection::finish_message(std::shared_ptr<connection> self, awaitable<void> rest) {
  co_await std::move(rest);
  // Posted, not called: co_spawn starts this coroutine inline, so a rest that completes
  // without suspending would otherwise start a read loop inside the paused one, one level
  // deeper for every such message in the buffer. What arrived behind the message is in in_.
  self->post_read(true);
}

void connection::post_read(bool kept_first) {
  asio::post(executor(), [self = shared_from_this(), kept_first] {
    if (!self->done()) self->read_burst(kept_first);
  });
}

void connection::keep_from(const char* data, std::size_t from, std::size_t size, bool owned) {
  if (owned) {
    in_.erase(0, from);
  } else {
    in_.assign(data + from, size - from);
  }
}

bool connection::consume(char* data, std::size_t size, bool owned) {
  std::size_t pos = 0;
  bool delivered = false;  // a whole message was handled: progress
  while (!done() && !close_received_ && !failing_) {
    const std::string_view rest(data + pos, size - pos);
    const auto parsed = parse_client_header(rest, max_message_bytes_);
    if (parsed.status == parse_status::need_more) break;
    if (parsed.status == parse_status::invalid) {
      fail(parsed.error, parsed.reason);
      break;
    }
    const frame_header& h = parsed.header;
    if (h.op == opcode::continuation && assembling_ &&
        message_.size() + h.payload_size > max_message_bytes_) {
      fail(close_code::message_too_big, "message too big");
      break;
    }
    if (rest.size() - h.header_size < h.payload_size) break;  // the payload is still arriving

    const std::size_t payload_size = static_cast<std::size_t>(h.payload_size);
    const std::size_t payload_at = pos + h.header_size;
    std::size_t next = payload_at + payload_size;
    unmask(data + payload_at, payload_size, h.mask);
    // A message whose handling goes on after on_message returned: reading pauses until its
    // rest completes. The thread's buffer is reused meanwhile, so what follows the message
    // moves into in_ (the rest owns what it needs of the message itself).
    auto pause_for = [&](awaitable<void> rest) {
      keep_from(data, next, size, owned);
      partial_since_ = std::chrono::steady_clock::now();  // a message was handled: progress
      auto self = shared_from_this();
      spawn(self, finish_message(self, std::move(rest)));
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
        if (state_ >= close_state::sent) break;  // closing: late messages are not handled
        delivered = true;
        if (auto rest = on_message(std::string_view(data + payload_at, payload_size))) {
          pause_for(std::move(*rest));
          return false;
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
        if (state_ < close_state::sent) {
          delivered = true;
          auto rest = on_message(message_);
          release(message_);
          if (rest) {
            pause_for(std::move(*rest));
            return false;
          }
          break;
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

  if (done() || close_received_ || failing_) {  // reading is over
    release(in_);
    partial_timer_.reset();
    return false;
  }
  keep_from(data, pos, size, owned);  // the unparsed tail (a partial frame), nothing else
  if (in_.empty()) release(in_);
  if (in_.empty() && !assembling_) {
    partial_timer_.reset();  // nothing held: nothing to watch
  } else {
    // A message has started; it must be complete within message_timeout of the last one.
    if (delivered || !partial_timer_) partial_since_ = std::chrono::steady_clock::now();
    if (!partial_timer_) watch_partial(options_.message_timeout);
  }
  return true;
}

void connection::on_close_frame(std::string_view payload) {
  close_received_ = true;
  if (state_ >= close_state::sent) {
    // The answer to ours: the handshake is complete and the server hangs up, at once if our
    // close frame is out, or else once the writer has finished writing it.
    if (state_ == close_state::written) abort();
    return;
  }
  close_code error = close_code::protocol_error;
  if (!valid_close_payload(payload, error)) {
    fail(error, "malformed close frame");
    return;
  }
  close_payload_.assign(payload.substr(0, 2));  // echo the peer's code
  // The echo follows what is already queued (answers to the messages read before the close),
  // as our own close does. The hook stops the producer, so that queue only shrinks; the close
  // timer bounds it anyway.
  state_ = close_state::wanted;
  on_close_received();
  arm_close_timer();
  wake_writer();
}

void connection::fail(close_code code, const char* reason) {
  if (done()) return;
  if (state_ >= close_state::sent) {
    abort();
    return;
  }
  close_payload_ = close_payload(static_cast<std::uint16_t>(code), reason);
  state_ = close_state::wanted;
  failing_ = true;
  arm_close_timer();
  wake_writer();
}

// --- writing -------------------------------------------------------------------------------------

// Frames in write order: an optional pong, up to max_batch_frames messages, an optional close.
// Payloads are read where they live at each gather (the control frames' strings may move with
// the batch), so a batch can move to the heap half-written.
struct connection::write_batch {
  static constexpr std::size_t max_frames = max_batch_frames + 2;

  std::array<std::array<char, max_server_header_bytes>, max_frames> headers;
  std::array<std::uint8_t, max_frames> header_sizes{};
  std::array<message, max_batch_frames> messages;
  std::string pong;
  std::string close;
  bool has_pong = false;
  bool has_close = false;
  std::size_t n_messages = 0;
  std::size_t total = 0;    // bytes of the whole batch
  std::size_t written = 0;  // bytes of it already written

  std::size_t frames() const { return (has_pong ? 1 : 0) + n_messages + (has_close ? 1 : 0); }

  std::string_view payload(std::size_t frame) const {
    if (has_pong && frame == 0) return pong;
    const std::size_t m = frame - (has_pong ? 1 : 0);
    if (m < n_messages) return *messages[m];
    return close;
  }

  // Writes the header of the frame about to be added: call it before counting that frame in
  // (has_pong, n_messages, has_close), since frames() is its index.
  void add_header(opcode op, std::size_t payload_size) {
    const std::size_t f = frames();
    header_sizes[f] = static_cast<std::uint8_t>(write_server_header(op, payload_size, headers[f]));
    total += header_sizes[f] + payload_size;
  }

  // The unwritten bytes as iovecs; returns how many were filled.
  std::size_t gather(std::array<iovec, 2 * max_frames>& out) const {
    std::size_t n = 0;
    std::size_t skip = written;
    auto piece = [&](const char* data, std::size_t size) {
      if (skip >= size) {
        skip -= size;
        return;
      }
      out[n++] = iovec{const_cast<char*>(data) + skip, size - skip};
      skip = 0;
    };
    const std::size_t count = frames();
    for (std::size_t f = 0; f < count; ++f) {
      piece(headers[f].data(), header_sizes[f]);
      const auto p = payload(f);
      piece(p.data(), p.size());
    }
    return n;
  }

  void clear() {
    for (std::size_t i = 0; i < n_messages; ++i) messages[i].reset();
    pong.clear();
    close.clear();
    has_pong = has_close = false;
    n_messages = total = written = 0;
  }
};

std::size_t connection::unwritten_bytes() const {
  return blocked_ ? blocked_->total - blocked_->written : 0;
}

void connection::wake_writer() {
  if (writing_ || state_ >= close_state::sent) return;
  writing_ = true;
  // Posted, not run here: the caller is usually in the middle of queueing a burst.
  post_flush();
}

void connection::post_flush() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->flush(); });
}

void connection::stop_writing(write_batch& spare) {
  spare.clear();
  blocked_.reset();
  writing_ = false;
}

void connection::close(std::uint16_t code, std::string_view reason) {
  if (state_ != close_state::open) return;
  state_ = close_state::wanted;
  close_payload_ = close_payload(code, reason);
  arm_close_timer();
  wake_writer();
}

bool connection::fill(write_batch& b) {
  if (pong_due_) {
    b.pong = std::move(pong_);
    release(pong_);
    pong_due_ = false;
    b.add_header(opcode::pong, b.pong.size());
    b.has_pong = true;
  }
  bool drained = true;
  if (!failing_) {
    drained = false;
    while (b.n_messages < max_batch_frames) {
      auto m = next_outgoing();
      if (!m) {
        drained = true;
        break;
      }
      b.add_header(opcode::binary, m->size());
      b.messages[b.n_messages++] = std::move(m);
    }
  }
  if (state_ == close_state::wanted && (failing_ || drained)) {
    b.close = std::move(close_payload_);
    release(close_payload_);
    b.add_header(opcode::close, b.close.size());
    b.has_close = true;
    state_ = close_state::sent;
  }
  return b.frames() > 0;
}

void connection::flush() {
  // Used by one flush at a time per thread: a flush never runs inside another, because
  // nothing below runs the io_context (no run_one or poll from inside a handler).
  thread_local write_batch spare;
  try {
    write_batches(spare);
    on_buffers_changed();
  } catch (const std::exception&) {  // e.g. bad_alloc from a hook: drop this connection only
    log_failure("websocket write failed", std::current_exception());
    stop_writing(spare);
    abort();
  }
}

void connection::write_batches(write_batch& spare) {
  for (std::size_t batches = 0;; ++batches) {
    if (done()) {
      stop_writing(spare);
      return;
    }
    if (!blocked_ && batches == batches_per_turn) {  // let the thread's other work run
      post_flush();
      return;
    }
    write_batch& b = blocked_ ? *blocked_ : spare;
    if (!blocked_ && !fill(b)) break;

    auto wait = socket_type::wait_write;
    if (tls_) {
      if (!write_tls(b, wait)) {
        stop_writing(spare);
        abort();
        return;
      }
    } else {
      std::array<iovec, 2 * write_batch::max_frames> iov;
      msghdr msg{};
      msg.msg_iov = iov.data();
      msg.msg_iovlen = b.gather(iov);
      ssize_t n;
      do {
        n = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      } while (n < 0 && errno == EINTR);
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        stop_writing(spare);
        abort();
        return;
      }
      if (n > 0) b.written += static_cast<std::size_t>(n);
    }

    if (b.written < b.total) {
      // The socket is full: the rest waits on the heap until there is room.
      if (!blocked_) {
        blocked_ = std::make_unique<write_batch>(std::move(spare));
        spare.clear();
      }
      socket_.async_wait(wait, [self = shared_from_this()](const boost::system::error_code& ec) {
        if (ec && !self->done()) self->abort();
        self->flush();
      });
      return;
    }
    const bool close_written = b.has_close;
    b.clear();
    blocked_.reset();
    if (close_written) {
      state_ = close_state::written;
      // After a failure, an echoed close, or a close of ours the peer has answered meanwhile,
      // the server ends its side at once; otherwise it waits (bounded by the close timer) for
      // the peer's answer, read as usual.
      if (failing_ || close_received_) linger();
      break;
    }
  }
  writing_ = false;
}

bool connection::write_tls(write_batch& b, socket_type::wait_type& wait) {
  // TLS encrypts contiguous bytes: the batch is copied into the thread's chunk, at most 64 KiB
  // (four records) at a time. A write that must wait is repeated with the same bytes, which
  // the batch still holds at the same offset, so the next chunk starts identical.
  thread_local std::string chunk;
  while (b.written < b.total) {
    std::array<iovec, 2 * write_batch::max_frames> iov;
    const std::size_t pieces = b.gather(iov);
    chunk.clear();
    for (std::size_t i = 0; i < pieces && chunk.size() < thread_buffer_bytes; ++i) {
      const std::size_t take = std::min(iov[i].iov_len, thread_buffer_bytes - chunk.size());
      chunk.append(static_cast<const char*>(iov[i].iov_base), take);
    }
    const auto r = tls_->write(chunk.data(), chunk.size());
    switch (r.state) {
      case tls_channel::status::ok:
        b.written += r.bytes;
        break;
      case tls_channel::status::want_write:
        wait = socket_type::wait_write;
        return true;
      case tls_channel::status::want_read:
        wait = socket_type::wait_read;
        return true;
      case tls_channel::status::closed:
      case tls_channel::status::failed:
        log_debug() << "TLS write failed: " << tls_->error_text();
        return false;
    }
  }
  return true;
}

// --- closing -------------------------------------------------------------------------------------

void connection::linger() {
  if (done()) return;
  if (tls_) tls_->shutdown();  // close_notify, then our FIN
  boost::system::error_code ignored;
  socket_.shutdown(socket_type::shutdown_send, ignored);
  spawn(shared_from_this(), discard_until_end(shared_from_this()));
}

awaitable<void> connection::discard_until_end(std::shared_ptr<connection> self) {
  // Reads first: the peer's end often comes right behind its close frame.
  std::size_t reads = 0;
  while (!self->done()) {
    boost::system::error_code ec;
    self->socket_.read_some(asio::buffer(thread_buffer(), thread_buffer_bytes), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      reads = 0;
      auto [wait_ec] = co_await self->socket_.async_wait(socket_type::wait_read,
                                                         asio::as_tuple(asio::use_awaitable));
      if (wait_ec && !self->done()) self->abort();
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
  if (!partial_timer_)
    partial_timer_ = std::make_unique<asio::steady_timer>(socket_.get_executor());
  partial_timer_->expires_after(wait);
  partial_timer_->async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->done() || !self->partial_timer_) return;  // cancelled: the message completed
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
  if (close_timer_ || done()) return;
  close_timer_ =
      std::make_unique<asio::steady_timer>(socket_.get_executor(), options_.close_timeout);
  close_timer_->async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->abort();
  });
}

void connection::abort() {
  if (done()) return;
  state_ = close_state::done;
  boost::system::error_code ignored;
  socket_.close(ignored);
  if (close_timer_) close_timer_->cancel();
  partial_timer_.reset();
  // in_ and message_ may be in use by a suspended read: they go with the object.
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->on_closed(); });
}

}  // namespace parley::ws
