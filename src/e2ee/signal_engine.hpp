// parley's small C++ interface to the Signal protocol (libsignal-protocol-c): this device's
// keys, X3DH session set-up from a fetched bundle, Double Ratchet encryption and decryption,
// sender keys for groups, and safety numbers. Messages are the library's own
// PreKeySignalMessage / SignalMessage / SenderKeyMessage / SenderKeyDistributionMessage bytes,
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
enum class message_type : int { signal = 2, prekey = 3, sender_key = 4 };

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

// Whose sender key, for which group: libsignal's sender key name. parley's group is the
// group's chat_id in decimal (group_of); the sender is a username and its device.
struct group_sender {
  std::string group;
  std::string sender;
  std::int32_t device = 0;
};

inline std::string group_of(std::uint64_t chat_id) { return std::to_string(chat_id); }

// This device's sender key for a group, as distributed: a serialized
// SenderKeyDistributionMessage (the key's id, its chain key at the current step and its public
// signing key), sent to each member over the pairwise session.
struct sender_key_distribution {
  std::uint32_t key_id = 0;
  std::string message;
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

  // --- Groups: sender keys (Signal's group messaging) -----------------------------------------
  // A member encrypts each group message once, with its own sender key (a hash chain of
  // message keys plus a signing key); the other members decrypt it with the copy it gave
  // them in a SenderKeyDistributionMessage. A copy holds the chain from the step it was made
  // at: whoever gets it reads the messages sent from then on, never earlier ones.

  // This device's sender key for `self.group` (self: this device's username and device),
  // created first if there is none: the distribution message at the chain's current step.
  result<sender_key_distribution> own_sender_key(const group_sender& self);
  // The id of this device's current sender key for the group, nullopt if there is none.
  result<std::optional<std::uint32_t>> own_sender_key_id(const group_sender& self);
  // Keeps the sender key that `from` (group, sender, device) distributed. A key this device
  // holds already (the same key id) is left as it is: a repeated or older distribution does
  // not rewind the chain (which would let a replayed message decrypt again). errc::
  // invalid_message if the bytes are not a distribution message.
  result<void> process_sender_key(const group_sender& from, const std::string& distribution);
  // Whether this device holds the key of `from` that `message` (a SenderKeyMessage) was made
  // with; false also for bytes that are not a SenderKeyMessage.
  bool has_sender_key_for(const group_sender& from, const std::string& message);
  // Encrypts with this device's sender key for the group (own_sender_key first):
  // errc::no_sender_key if there is none. The result is a SenderKeyMessage (type sender_key).
  result<ciphertext> group_encrypt(const group_sender& self, const std::string& plaintext);
  // Decrypts a SenderKeyMessage of `from`. errc::no_sender_key if this device does not hold
  // the key it was made with (not distributed to it yet, or never: a key made after this
  // member left, or one made before it joined and not given to it); invalid_message if it is
  // not a SenderKeyMessage or its signature does not verify; duplicate_message for a message
  // whose key was used already.
  result<std::string> group_decrypt(const group_sender& from, const std::string& message);
  // Forgets one sender key: this device's own (rotation: the next own_sender_key makes a new
  // one, whose messages the holders of the old one cannot read) or another member's.
  result<void> forget_sender_key(const group_sender& whose);
  // Forgets every sender key of a group, this device's own included (it is no longer a
  // member); how many there were.
  result<std::size_t> forget_group(const std::string& group);

  // The 60-digit safety number of this user and `peer` (libsignal's displayable fingerprint:
  // 5,200 SHA-512 iterations of its version-0 hash, usernames as the stable identifiers;
  // docs/security.md): the same on both sides.
  result<std::string> safety_number(const std::string& me, const std::string& peer);

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace parley::e2ee
