// A TLS session on a non-blocking socket: OpenSSL reading and writing the descriptor itself,
// so that a TLS connection keeps ws::connection's design (wait for readiness, read until the
// socket would block, gathered writes) instead of a stream object and a coroutine per read.
//
// Every call returns at once: `want_read` / `want_write` say which readiness to wait for
// before calling again (OpenSSL's rule: a write that wanted to wait is repeated with the same
// bytes). No exceptions; errors are `failed`, with error_text() for the log.
//
// Idle cost: the SSL object (~6 KiB with OpenSSL 3); its read and write buffers are released
// while empty (SSL_MODE_RELEASE_BUFFERS). Not thread-safe: one executor, like the connection.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

using SSL = struct ssl_st;

namespace parley::ws {

class tls_channel {
 public:
  enum class status { ok, want_read, want_write, closed, failed };
  struct io_result {
    std::size_t bytes = 0;
    status state = status::ok;
  };

  // Takes ownership of `ssl`, which must be set up for the accepting side on the socket's
  // descriptor (server/tls_context does that).
  explicit tls_channel(SSL* ssl);
  ~tls_channel();
  tls_channel(const tls_channel&) = delete;
  tls_channel& operator=(const tls_channel&) = delete;

  // One step of the server's handshake: ok once it is complete.
  io_result handshake();
  // Up to `size` decrypted bytes; `closed` at the peer's close_notify or end of stream.
  io_result read(char* buffer, std::size_t size);
  // Writes up to `size` bytes (whole records); a want_* result must be repeated with the same
  // bytes (the buffer may move: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
  io_result write(const char* data, std::size_t size);
  // Sends close_notify if it can without waiting (best effort: the TCP close follows).
  void shutdown();
  // OpenSSL's reason for the last failure.
  const std::string& error_text() const { return error_; }

 private:
  io_result outcome(int rc);

  SSL* ssl_;
  std::string error_;
};

}  // namespace parley::ws
