// The server side of the WebSocket opening handshake (RFC 6455 §4.2), on a request that
// Beast's HTTP parser has read: answer_handshake() decides the reply (no I/O), answer_upgrade()
// also writes it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace parley::ws {

struct handshake_reply {
  // 101 Switching Protocols when `accepted`; otherwise 400 Bad Request, or 426 Upgrade
  // Required (with Sec-WebSocket-Version: 13) for a version other than 13. An error reply
  // asks for the connection to be closed.
  boost::beast::http::response<boost::beast::http::string_body> response;
  bool accepted = false;
};

// Checks `request` as an opening handshake: GET, HTTP/1.1 or later, a Host, "Upgrade:
// websocket", "Connection: upgrade", a Sec-WebSocket-Key of 16 bytes in base64 and
// Sec-WebSocket-Version 13. No extension and no subprotocol is ever agreed. `server` is sent
// as the Server header.
handshake_reply answer_handshake(
    const boost::beast::http::request<boost::beast::http::string_body>& request,
    std::string_view server);

// Writes answer_handshake()'s reply to `request` on `stream`. Accepted (101 written): returns
// the bytes `buffer` holds past the request, which belong to the WebSocket (connection::start).
// nullopt: refused (the refusal is written) or the write failed; the connection should end.
boost::asio::awaitable<std::optional<std::string>> answer_upgrade(
    boost::beast::tcp_stream& stream, const boost::beast::flat_buffer& buffer,
    const boost::beast::http::request<boost::beast::http::string_body>& request,
    std::string_view server);

// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64(SHA-1(key + RFC 6455's GUID)).
std::string accept_key(std::string_view client_key);

}  // namespace parley::ws
