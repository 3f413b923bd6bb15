#pragma once

#include <string>

#include "parley/v2/frame.pb.h"

namespace parley::wire {

// A typed error to send back to a client: a stable code and text for people.
struct protocol_error {
  parley::v2::ErrorCode code = parley::v2::ERROR_CODE_UNSPECIFIED;
  std::string message;
};

}  // namespace parley::wire
