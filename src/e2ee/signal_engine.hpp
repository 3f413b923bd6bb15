// parley's small C++ interface to the Signal protocol (libsignal-protocol-c): this device's
// keys, X3DH session set-up from a fetched bundle, Double Ratchet encryption and decryption,
// and safety numbers. Messages are the library's own PreKeySignalMessage / SignalMessage bytes,
// so any Signal-protocol implementation can read them.
//
// Not thread-safe: one engine per device, used from one thread. Every operation reads and
// writes the key_store; callers that need an operation and their own records to be kept
// together (decrypt + history) wrap both in one transaction of the store.
//
// Trust: trust on first use. A user's identity key is trusted the first time it is seen; a
// later different key is accepted (as Signal does for contacts not marked verified) but
// recorded as an identity_change that the caller must show to the user before anything else
// is sent or shown in that chat (see key_store::take_unseen_identity_changes).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "e2ee/e2ee_error.hpp"
#include "e2ee/key_store.hpp"
#include "e2ee/library_context.hpp"

namespace parley::e2ee {

// libsignal's message types (parley.v2.CipherType uses the same numbers).
enum class message_type : int { signal = 2, prekey = 3 };

struct public_prekey {
  std::uint32_t id = 0;
  std::string public_key;  // 33 bytes: 0x05 | Curve25519
  std::string signature;   // signed prekeys: 64-byte XEdDSA signature by the identity key
};

// What this device publishes (parley.v2.UploadKeys).
struct key_upload {
  std::string identity_key;
  std::uint32_t registration_id = 0;
  std::optional<public_prekey> signed_prekey;
  std::vector<public_prekey> one_time_prekeys;
};

// Another device's published keys (parley.v2.PreKeyBundle).
struct peer_bundle {
  std::string username;
  std::int32_t device = 0;
  std::uint32_t registration_id = 0;
  std::string identity_key;
  public_prekey signed_prekey;
  std::optional<public_prekey> one_time_prekey;
};

struct ciphertext {
  message_type type = message_type::signal;
  std::string bytes;
};

class signal_engine {
 public:
  signal_engine(library_context& library, key_store& store);
  ~signal_engine();
  signal_engine(const signal_engine&) = delete;
  signal_engine& operator=(const signal_engine&) = delete;

  bool has_identity();
  // Creates this device's identity key pair, registration id and first signed prekey. An
  // identity that exists is kept (returns false).
  result<bool> create_identity(std::uint64_t now_ms);
  result<std::string> identity_key();  // public, serialized
  result<std::uint32_t> registration_id();

  // Identity, registration id and current signed prekey, plus `one_time` new one-time
  // prekeys (generated and stored here first): the first upload of an install.
  result<key_upload> full_upload(std::size_t one_time);
  // Identity and registration id plus `one_time` new one-time prekeys (no signed prekey).
  result<key_upload> top_up(std::size_t one_time);
  // If the newest signed prekey is older than `max_age_ms`, makes a new one and returns the
  // upload that publishes it. A signed prekey replaced by a newer one more than `keep_ms` ago
  // is deleted: messages built on it can no longer start a session.
  result<std::optional<key_upload>> rotate_signed_prekey(std::uint64_t now_ms,
                                                         std::uint64_t max_age_ms,
                                                         std::uint64_t keep_ms);

  // X3DH: builds a session with the bundle's device. The signed prekey's signature is checked
  // (errc::invalid_bundle). A new identity key for a known user is recorded as a change.
  result<void> process_bundle(const peer_bundle& bundle);
  bool has_session(const std::string& peer, std::int32_t device);
  // The registration id of the peer device in the current session.
  result<std::uint32_t> remote_registration_id(const std::string& peer, std::int32_t device);

  result<ciphertext> encrypt(const std::string& peer, std::int32_t device,
                             const std::string& plaintext);
  result<std::string> decrypt(const std::string& peer, std::int32_t device, message_type type,
                              const std::string& bytes);

  // The 60-digit safety number of this user and `peer` (libsignal's displayable fingerprint:
  // 5,200 SHA-512 iterations of its version-0 hash, usernames as the stable identifiers;
  // docs/security.md): the same on both sides.
  result<std::string> safety_number(const std::string& me, const std::string& peer);

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace parley::e2ee
