// parleyd's TLS certificate and key (--tls-cert, --tls-key): an OpenSSL server context that
// new connections take their session from, reloadable while the server runs (SIGHUP), so that
// a renewed certificate needs no restart. Connections already open keep the context they
// started with.
//
// TLS 1.2 and 1.3 only; OpenSSL's default cipher suites of those versions; no renegotiation,
// no compression, no session tickets kept across a reload.
//
// Thread-safe: new_session() and reload() may run on any thread.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include <boost/asio/ssl/context.hpp>

#include "ws/tls_channel.hpp"

using SSL_CTX = struct ssl_ctx_st;

namespace parley::server {

class tls_context {
 public:
  // Loads the certificate chain (PEM, leaf first) and its private key. Throws
  // std::runtime_error naming the file and OpenSSL's reason: start-up code.
  tls_context(std::filesystem::path cert, std::filesystem::path key);

  // Loads the files again; on failure keeps the current context and returns the reason.
  std::string reload();

  // A server-side session on `fd` (handshake not started), or nullptr if OpenSSL fails.
  std::unique_ptr<ws::tls_channel> new_session(int fd);

  // The current certificate and key as an Asio context, for the blob server
  // (media::blob_http_server::set_tls): the same OpenSSL context, the same settings, a
  // reference of its own. After a reload(), ask again for the new one.
  std::shared_ptr<boost::asio::ssl::context> asio_context();

 private:
  static std::shared_ptr<SSL_CTX> load(const std::filesystem::path& cert,
                                       const std::filesystem::path& key);

  const std::filesystem::path cert_;
  const std::filesystem::path key_;
  std::mutex mutex_;
  std::shared_ptr<SSL_CTX> current_;
};

}  // namespace parley::server
