// Decoding and validation of frames read from a peer, and encoding of frames to send.
// No I/O. Everything a client can get wrong comes back as a protocol_error, never an exception.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "parley/v2/frame.pb.h"
#include "wire/limits.hpp"
#include "wire/protocol_error.hpp"

namespace parley::wire {

// An encoded frame, shared by every session that sends it (no copy per recipient).
using encoded_frame = std::shared_ptr<const std::string>;

// Parses one client-to-server frame and checks it against `limits`. Server-to-client bodies
// are refused with ERROR_CODE_UNSUPPORTED.
std::optional<protocol_error> decode_request(std::string_view bytes, const limits& limits,
                                             parley::v2::Frame& out);

// Parses one server-to-client frame (the client SDK's side). No limit checks beyond parsing.
std::optional<protocol_error> decode_push(std::string_view bytes, parley::v2::Frame& out);

encoded_frame encode(const parley::v2::Frame& frame);

// Stops libprotobuf from logging a line per malformed string field: a peer could otherwise
// make a process write to stderr at the rate it sends bad frames (found by the fuzz target).
// Decoding errors are reported as values anyway. Call once at start-up.
void silence_protobuf_logging();

parley::v2::Frame make_error(std::uint64_t request_id, parley::v2::ErrorCode code,
                             std::string message);

}  // namespace parley::wire
