#include "e2ee/key_check.hpp"

#include <signal/curve.h>
#include <signal/signal_protocol.h>

namespace parley::e2ee {
namespace {

const std::uint8_t* bytes(std::string_view s) {
  return reinterpret_cast<const std::uint8_t*>(s.data());
}

}  // namespace

bool verify_signed_prekey(std::string_view identity_key, std::string_view signed_prekey,
                          std::string_view signature) {
  if (signature.size() != 64) return false;
  ec_public_key* key = nullptr;
  // Decoding and verifying need no crypto provider, so no global context.
  if (curve_decode_point(&key, bytes(identity_key), identity_key.size(), nullptr) != 0) {
    return false;
  }
  const int verified = curve_verify_signature(key, bytes(signed_prekey), signed_prekey.size(),
                                              bytes(signature), signature.size());
  SIGNAL_UNREF(key);
  return verified == 1;
}

}  // namespace parley::e2ee
