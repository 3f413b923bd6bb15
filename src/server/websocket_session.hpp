// One WebSocket connection on /v2/ws: a ws::connection whose messages go to a device_session
// and whose outgoing queue is the device_session's.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <string>

#include "server/admission.hpp"
#include "server/connection_set.hpp"
#include "server/shared_state.hpp"

namespace parley::server {

// Runs the connection on `socket`, whose opening handshake has been answered with 101.
// `initial` holds bytes read past the handshake request; `ticket` is the connection's admission,
// held until it closes. Returns at once; the connection lives on the socket's executor until
// it closes. Until Authenticate succeeds, messages over
// limits.max_unauthenticated_frame_bytes close it (1009).
// `tls`: the connection's TLS session, handshake done (nullptr for plain TCP).
void start_websocket_session(shared_state& state, connection_set& connections,
                             boost::asio::ip::tcp::socket socket, std::string initial,
                             admission::ticket ticket, std::unique_ptr<ws::tls_channel> tls);

}  // namespace parley::server
