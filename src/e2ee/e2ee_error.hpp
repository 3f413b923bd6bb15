// Errors of the end-to-end encryption layer, as a Boost.System error category.
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace parley::e2ee {

enum class errc {
  no_identity = 1,    // this device has no identity yet (create_identity first)
  no_session,         // no session with that device: fetch its bundle first
  invalid_message,    // not a well-formed Signal message, or its MAC does not verify
  duplicate_message,  // a message already decrypted (its key was used and deleted)
  unknown_prekey,     // the message was built on a prekey this device no longer has
  invalid_bundle,     // a key bundle that does not verify (bad signature, bad key)
  unknown_identity,   // no identity key known for that user (no session yet)
  malformed_content,  // decrypted, but not a parley message (bad padding)
  storage,            // the local store failed; nothing of the operation was kept
  library,            // any other failure inside libsignal-protocol-c
  // A group message whose sender key this device does not hold (yet): the sender's
  // distribution message may still be on its way. Keep the message and try again later.
  no_sender_key,
};

const boost::system::error_category& e2ee_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), e2ee_category()};
}

template <class T>
using result = boost::system::result<T>;

}  // namespace parley::e2ee

template <>
struct boost::system::is_error_code_enum<parley::e2ee::errc> : std::true_type {};
