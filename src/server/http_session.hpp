// One accepted TCP connection speaking HTTP/1.1: GET /healthz, GET /metrics, and the WebSocket
// upgrade on /v2/ws, after which the connection belongs to a websocket_session.
//
// Malformed requests get a status line before the connection is closed: 431 for headers over
// 8 KiB, 413 for a body over 1 KiB, 400 for anything else that does not parse (garbage, an
// unknown HTTP version). A connection idle for 30 s between requests is closed.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <string>

#include "server/admission.hpp"
#include "server/connection_set.hpp"
#include "server/shared_state.hpp"
#include "ws/tls_channel.hpp"

namespace parley::server {

enum class http_role {
  main,             // WebSocket, /healthz, and /metrics unless metrics have an address of their own
  main_no_metrics,  // the same without /metrics
  metrics,          // /metrics and /healthz only (the metrics address)
};

// Serves `socket`, admitted with `ticket` (which the connection holds until it closes). With
// `tls` (a session on the socket, handshake not started), everything goes through TLS: the
// handshake must complete within 10 s, then HTTPS and wss:// as above.
void start_http_session(shared_state& state, connection_set& connections,
                        boost::asio::ip::tcp::socket socket, admission::ticket ticket,
                        http_role role, std::unique_ptr<ws::tls_channel> tls);

}  // namespace parley::server
