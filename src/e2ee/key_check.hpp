// Checks of public key material that the server can do without any secret: the signed
// prekey's XEdDSA signature by the identity key (the check X3DH itself makes on a bundle).
#pragma once

#include <string_view>

namespace parley::e2ee {

// True if `signature` (64 bytes) is the identity key's signature of `signed_prekey` (the 33-byte
// serialized public key). Both keys are libsignal's serialized form: 0x05 | 32 bytes.
bool verify_signed_prekey(std::string_view identity_key, std::string_view signed_prekey,
                          std::string_view signature);

}  // namespace parley::e2ee
