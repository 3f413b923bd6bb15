#include "ws/handshake.hpp"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/write.hpp>

namespace parley::ws {
namespace {

namespace http = boost::beast::http;

constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool base64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

// Exactly 16 bytes in base64: 22 characters, the last carrying 2 bits only, then "==".
bool valid_key(std::string_view key) {
  if (key.size() != 24 || key.substr(22) != "==") return false;
  for (std::size_t i = 0; i < 22; ++i)
    if (!base64_char(key[i])) return false;
  return std::string_view("AQgw").find(key[21]) != std::string_view::npos;
}

http::response<http::string_body> refusal(const http::request<http::string_body>& request,
                                          http::status status, std::string_view server,
                                          std::string body) {
  http::response<http::string_body> res{status, request.version()};
  res.set(http::field::server, server);
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.keep_alive(false);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

}  // namespace

std::string accept_key(std::string_view client_key) {
  std::string input(client_key);
  input += guid;
  std::array<unsigned char, SHA_DIGEST_LENGTH> digest{};
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest.data());
  std::array<unsigned char, 4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1> out{};
  const int n = EVP_EncodeBlock(out.data(), digest.data(), SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<const char*>(out.data()), static_cast<std::size_t>(n));
}

handshake_reply answer_handshake(const http::request<http::string_body>& request,
                                 std::string_view server) {
  handshake_reply reply;
  auto refuse = [&](std::string why) {
    reply.response = refusal(request, http::status::bad_request, server, std::move(why) + "\n");
    return std::move(reply);
  };
  if (request.method() != http::verb::get) return refuse("a WebSocket handshake must be a GET");
  if (request.version() < 11) return refuse("a WebSocket handshake needs HTTP/1.1");
  if (request.find(http::field::host) == request.end()) return refuse("no Host header");
  if (!http::token_list(request[http::field::connection]).exists("upgrade"))
    return refuse("no \"Connection: upgrade\"");
  if (!http::token_list(request[http::field::upgrade]).exists("websocket"))
    return refuse("no \"Upgrade: websocket\"");
  const auto key = request[http::field::sec_websocket_key];
  if (!valid_key(key)) return refuse("Sec-WebSocket-Key is not 16 bytes in base64");
  if (request[http::field::sec_websocket_version] != "13") {
    reply.response = refusal(request, http::status::upgrade_required, server,
                             "only WebSocket version 13 is spoken here\n");
    reply.response.set(http::field::sec_websocket_version, "13");
    return reply;
  }

  http::response<http::string_body> res{http::status::switching_protocols, request.version()};
  res.set(http::field::server, server);
  res.set(http::field::upgrade, "websocket");
  res.set(http::field::connection, "Upgrade");
  res.set(http::field::sec_websocket_accept, accept_key(key));
  reply.response = std::move(res);
  reply.accepted = true;
  return reply;
}

boost::asio::awaitable<std::optional<std::string>> answer_upgrade(
    boost::beast::tcp_stream& stream, const boost::beast::flat_buffer& buffer,
    const http::request<http::string_body>& request, std::string_view server) {
  auto reply = answer_handshake(request, server);
  auto [ec, n] = co_await http::async_write(stream, reply.response,
                                            boost::asio::as_tuple(boost::asio::use_awaitable));
  if (ec || !reply.accepted) co_return std::nullopt;
  const auto rest = buffer.cdata();
  co_return std::string(static_cast<const char*>(rest.data()), rest.size());
}

}  // namespace parley::ws
