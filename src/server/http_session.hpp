// One accepted TCP connection speaking HTTP/1.1: GET /healthz, GET /metrics, and the WebSocket
// upgrade on /v1/ws, after which the connection belongs to a websocket_session.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <string>

#include "server/connection_set.hpp"
#include "server/shared_state.hpp"

namespace parley::server {

void start_http_session(shared_state& state, connection_set& connections,
                        boost::asio::ip::tcp::socket socket);

}  // namespace parley::server
