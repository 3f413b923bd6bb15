#include "common/tls_client.hpp"

#include <openssl/err.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/verify_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>
#include <iterator>
#include <utility>

namespace parley::tls_client {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// A failed step: its message is the step, then the reason the value stands for in `reasons`
// (OpenSSL's error codes as asio's SSL category holds them, asio's SSL stream errors, errno)
// or, if `reasons` is null, OpenSSL's certificate verdict (an X509_V_ERR_* code).
class tls_category final : public boost::system::error_category {
 public:
  tls_category(const char* name, const char* step, const boost::system::error_category* reasons)
      : name_(name), step_(step), reasons_(reasons) {}
  const char* name() const noexcept override { return name_; }
  std::string message(int ev) const override {
    if (!reasons_) return step_ + std::string(X509_verify_cert_error_string(ev));
    return step_ + reasons_->message(ev);
  }

 private:
  const char* name_;
  const char* step_;
  const boost::system::error_category* reasons_;
};

const tls_category& verify_failed() {
  static const tls_category c("parley.tls.verify", "TLS: certificate verify failed: ", nullptr);
  return c;
}

enum class tls_step { setup, ca_file, trust_store, handshake };

// `ec` as a failure of `step`, with its reason: OpenSSL's errors, asio's SSL stream errors (the
// peer's EOF in mid-handshake) and system errors (an unreadable file) get the step in front;
// anything else (a timeout) stays as it is.
error_code tls_error(const error_code& ec, tls_step step) {
  static const boost::system::error_category* const sources[] = {
      &asio::error::get_ssl_category(), &asio::ssl::error::get_stream_category(),
      &boost::system::system_category()};
  static const std::deque<tls_category> categories = [] {
    const std::pair<const char*, const char*> steps[] = {
        {"parley.tls.setup", "TLS: cannot set up the connection: "},
        {"parley.tls.ca_file", "TLS: cannot load the CA file: "},
        {"parley.tls.trust_store", "TLS: cannot load the system's trusted certificates: "},
        {"parley.tls.handshake", "TLS handshake failed: "}};
    std::deque<tls_category> all;  // in place: categories are neither copied nor moved
    for (const auto& [name, text] : steps) {
      for (const auto* source : sources) all.emplace_back(name, text, source);
    }
    return all;
  }();
  for (std::size_t i = 0; i < std::size(sources); ++i) {
    if (ec.category() == *sources[i]) {
      return {ec.value(), categories[static_cast<std::size_t>(step) * std::size(sources) + i]};
    }
  }
  return ec;
}

// The oldest error OpenSSL queued, as a failure of `step` (never 0, which would be success).
error_code openssl_error(tls_step step) {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  return tls_error(
      {static_cast<int>(e != 0 ? e : ERR_R_INTERNAL_ERROR), asio::error::get_ssl_category()}, step);
}

}  // namespace

error_code make_context(std::optional<asio::ssl::context>& ctx, const std::string& ca_file) {
  try {
    auto& c = ctx.emplace(asio::ssl::context::tls_client);
    if (SSL_CTX_set_min_proto_version(c.native_handle(), TLS1_2_VERSION) != 1) {
      return openssl_error(tls_step::setup);
    }
    error_code ec;
    c.set_verify_mode(asio::ssl::verify_peer, ec);
    if (ec) return tls_error(ec, tls_step::setup);
    if (ca_file.empty()) {
      c.set_default_verify_paths(ec);
      if (ec) return tls_error(ec, tls_step::trust_store);
    } else {
      c.load_verify_file(ca_file, ec);
      if (ec) return tls_error(ec, tls_step::ca_file);
    }
    return {};
  } catch (const boost::system::system_error& e) {  // asio's SSL_CTX_new failed
    return tls_error(e.code(), tls_step::setup);
  }
}

error_code expect_host(stream& s, const std::string& host) {
  error_code not_ip;
  asio::ip::make_address(host, not_ip);
  const bool is_ip = !not_ip;
  if (!is_ip && SSL_set_tlsext_host_name(s.native_handle(), host.c_str()) != 1) {
    return openssl_error(tls_step::setup);
  }
  error_code ec;
  s.set_verify_callback(
      [check = asio::ssl::host_name_verification(host), is_ip](bool preverified,
                                                               asio::ssl::verify_context& v) {
        if (check(preverified, v)) return true;
        // asio's check leaves OpenSSL's verdict at "ok" when only the name is wrong: say so.
        if (X509_STORE_CTX_get_error(v.native_handle()) == X509_V_OK) {
          X509_STORE_CTX_set_error(v.native_handle(), is_ip ? X509_V_ERR_IP_ADDRESS_MISMATCH
                                                            : X509_V_ERR_HOSTNAME_MISMATCH);
        }
        return false;
      },
      ec);
  if (ec) return tls_error(ec, tls_step::setup);
  return {};
}

asio::awaitable<error_code> handshake(stream& s) {
  auto [ec] = co_await s.async_handshake(asio::ssl::stream_base::client,
                                         asio::as_tuple(asio::use_awaitable));
  SSL* ssl = s.native_handle();
  const long verdict = SSL_get_verify_result(ssl);
  if (verdict != X509_V_OK) co_return error_code{static_cast<int>(verdict), verify_failed()};
  if (ec) co_return tls_error(ec, tls_step::handshake);
  if (SSL_get0_peer_certificate(ssl) == nullptr)
    co_return error_code{X509_V_ERR_UNSPECIFIED, verify_failed()};
  co_return error_code{};
}

}  // namespace parley::tls_client
