// One WebSocket connection on /v1/ws: Beast's read loop and write loop around a
// device_session. Beast's websocket templates are instantiated only in websocket_session.cpp.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include "server/connection_set.hpp"
#include "server/shared_state.hpp"

namespace parley::server {

// Completes the WebSocket handshake for `upgrade` on `socket` and runs the connection until
// it closes. Returns at once; the connection lives on the socket's executor.
void start_websocket_session(shared_state& state, connection_set& connections,
                             boost::asio::ip::tcp::socket socket,
                             boost::beast::http::request<boost::beast::http::string_body> upgrade);

}  // namespace parley::server
