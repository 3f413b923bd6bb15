// The client side of TLS, shared by the SDK's wss:// (client/ws_connection) and https://
// (client/blob_transfer) and by parleyd's requests to an S3 store (media/s3): TLS
// 1.2 or later; the peer's certificate verified against one CA file (only the certificates
// in it) or, without one, the system's trusted certificates; the host name checked, and sent
// as SNI unless the host is an IP address. Failures are error_codes whose message names the
// step ("TLS: cannot load the CA file: ...", "TLS: certificate verify failed: ...").
#pragma once

#include <openssl/ssl.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/system/error_code.hpp>
#include <optional>
#include <string>

namespace parley::tls_client {

using stream = boost::beast::ssl_stream<boost::beast::tcp_stream>;

// Makes `ctx` (replacing what it held): a client context as above. `ca_file` empty: the
// system's store.
boost::system::error_code make_context(std::optional<boost::asio::ssl::context>& ctx,
                                       const std::string& ca_file);

// Sets up `s` (made on a context from make_context, not yet connected) to check that the
// certificate is `host`'s, and to send SNI unless `host` is an IP address.
boost::system::error_code expect_host(stream& s, const std::string& host);

// The client's side of the handshake on `s` (set up by expect_host, connected; the stream's
// own deadline applies), and its outcome as a connection reports it: a certificate that
// failed verification as "certificate verify failed" with OpenSSL's verdict (also a
// handshake that passed without a verified certificate, which must never count as
// connected); any other failure as a failed handshake, except the stream's timeout, which
// stays boost::beast::error::timeout.
boost::asio::awaitable<boost::system::error_code> handshake(stream& s);

}  // namespace parley::tls_client
