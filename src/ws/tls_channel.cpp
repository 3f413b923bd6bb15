#include "ws/tls_channel.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <climits>

namespace parley::ws {

tls_channel::tls_channel(SSL* ssl) : ssl_(ssl) {
  SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                         SSL_MODE_RELEASE_BUFFERS);
}

tls_channel::~tls_channel() { SSL_free(ssl_); }

tls_channel::io_result tls_channel::outcome(int rc) {
  if (rc > 0) return {static_cast<std::size_t>(rc), status::ok};
  switch (SSL_get_error(ssl_, rc)) {
    case SSL_ERROR_WANT_READ:
      return {0, status::want_read};
    case SSL_ERROR_WANT_WRITE:
      return {0, status::want_write};
    case SSL_ERROR_ZERO_RETURN:
      return {0, status::closed};
    case SSL_ERROR_SYSCALL:
      if (ERR_peek_error() == 0) {  // end of stream or a reset without close_notify
        ERR_clear_error();
        return {0, status::closed};
      }
      [[fallthrough]];
    default: {
      char text[256] = "TLS error";
      if (const unsigned long e = ERR_get_error()) ERR_error_string_n(e, text, sizeof text);
      error_ = text;
      ERR_clear_error();
      return {0, status::failed};
    }
  }
}

tls_channel::io_result tls_channel::handshake() {
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl_);
  if (rc == 1) return {0, status::ok};
  auto r = outcome(rc);
  if (r.state == status::ok || r.state == status::closed) r.state = status::failed;
  return r;
}

tls_channel::io_result tls_channel::read(char* buffer, std::size_t size) {
  ERR_clear_error();
  return outcome(SSL_read(ssl_, buffer, static_cast<int>(std::min<std::size_t>(size, INT_MAX))));
}

tls_channel::io_result tls_channel::write(const char* data, std::size_t size) {
  if (size == 0) return {0, status::ok};
  ERR_clear_error();
  return outcome(SSL_write(ssl_, data, static_cast<int>(std::min<std::size_t>(size, INT_MAX))));
}

void tls_channel::shutdown() {
  ERR_clear_error();
  if (SSL_is_init_finished(ssl_)) SSL_shutdown(ssl_);
  ERR_clear_error();
}

}  // namespace parley::ws
