// One HTTP connection that is plain TCP or TLS over TCP, chosen when it is made: the blob
// server's (media/local/blob_http_server, TLS with parleyd's certificate) and the client's
// to a blob store (client/blob_transfer, https:// URLs). Beast's and Asio's calls go through
// with(), written once for both kinds.
//
// Not thread-safe: one strand, as any Beast stream. The ssl::context a TLS connection is made
// on must outlive it.
#pragma once

#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <optional>
#include <utility>

namespace parley {

class plain_or_tls {
 public:
  using tls_stream = boost::beast::ssl_stream<boost::beast::tcp_stream>;

  // A new connection (an earlier one is dropped), made from `args` as the stream's own
  // constructor takes them.
  template <class... Args>
  boost::beast::tcp_stream& make_plain(Args&&... args) {
    tls_.reset();
    return plain_.emplace(std::forward<Args>(args)...);
  }
  template <class... Args>
  tls_stream& make_tls(Args&&... args) {
    plain_.reset();
    return tls_.emplace(std::forward<Args>(args)...);
  }

  // f(stream) on whichever stream it is. A connection must have been made.
  template <class F>
  decltype(auto) with(F&& f) {
    if (tls_) return f(*tls_);
    return f(*plain_);
  }
  // The TCP layer (its socket, its timeouts).
  boost::beast::tcp_stream& transport() {
    return tls_ ? boost::beast::get_lowest_layer(*tls_) : *plain_;
  }
  void expires_after(std::chrono::steady_clock::duration d) { transport().expires_after(d); }
  // The TLS stream, or nullptr over plain TCP.
  tls_stream* tls() { return tls_ ? &*tls_ : nullptr; }

 private:
  std::optional<boost::beast::tcp_stream> plain_;
  std::optional<tls_stream> tls_;
};

}  // namespace parley
