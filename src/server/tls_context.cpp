#include "server/tls_context.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <stdexcept>

namespace parley::server {
namespace {

std::string openssl_reason() {
  char text[256] = "unknown OpenSSL error";
  if (const unsigned long e = ERR_get_error()) ERR_error_string_n(e, text, sizeof text);
  ERR_clear_error();
  return text;
}

}  // namespace

std::shared_ptr<SSL_CTX> tls_context::load(const std::filesystem::path& cert,
                                           const std::filesystem::path& key) {
  ERR_clear_error();
  std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!ctx) throw std::runtime_error("TLS: " + openssl_reason());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                     SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str()) != 1) {
    throw std::runtime_error("TLS certificate " + cert.string() + ": " + openssl_reason());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1) {
    throw std::runtime_error("TLS key " + key.string() + ": " + openssl_reason());
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    throw std::runtime_error("TLS key " + key.string() + " does not match the certificate " +
                             cert.string() + ": " + openssl_reason());
  }
  return ctx;
}

tls_context::tls_context(std::filesystem::path cert, std::filesystem::path key)
    : cert_(std::move(cert)), key_(std::move(key)), current_(load(cert_, key_)) {}

std::string tls_context::reload() {
  try {
    auto fresh = load(cert_, key_);
    std::lock_guard lock(mutex_);
    current_ = std::move(fresh);
    return {};
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::shared_ptr<boost::asio::ssl::context> tls_context::asio_context() {
  std::shared_ptr<SSL_CTX> ctx;
  {
    std::lock_guard lock(mutex_);
    ctx = current_;
  }
  SSL_CTX_up_ref(ctx.get());  // the Asio context frees its own reference
  return std::make_shared<boost::asio::ssl::context>(ctx.get());
}

std::unique_ptr<ws::tls_channel> tls_context::new_session(int fd) {
  std::shared_ptr<SSL_CTX> ctx;
  {
    std::lock_guard lock(mutex_);
    ctx = current_;
  }
  SSL* ssl = SSL_new(ctx.get());  // holds its own reference to the context
  if (ssl == nullptr) return nullptr;
  if (SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    return nullptr;
  }
  SSL_set_accept_state(ssl);
  return std::make_unique<ws::tls_channel>(ssl);
}

}  // namespace parley::server
