#include "client/messenger.hpp"

#include <limits>

#include "client/padding.hpp"
#include "common/clock.hpp"

namespace parley::client {
namespace asio = boost::asio;
namespace v2 = parley::v2;
using asio::awaitable;

namespace {

client_error crypto_error(const boost::system::error_code& ec) {
  return {client_error::kind::crypto, v2::ERROR_CODE_UNSPECIFIED, ec.message()};
}

client_error crypto_error(const std::string& what) {
  return {client_error::kind::crypto, v2::ERROR_CODE_UNSPECIFIED, what};
}

bool fits_device(std::uint64_t device) {
  return device > 0 &&
         device <= static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max());
}

}  // namespace

v2::UploadKeys to_wire(const e2ee::key_upload& k) {
  v2::UploadKeys out;
  out.set_identity_key(k.identity_key);
  out.set_registration_id(k.registration_id);
  if (k.signed_prekey) {
    auto* spk = out.mutable_signed_prekey();
    spk->set_id(k.signed_prekey->id);
    spk->set_public_key(k.signed_prekey->public_key);
    spk->set_signature(k.signed_prekey->signature);
  }
  for (const auto& p : k.one_time_prekeys) {
    auto* otk = out.add_one_time_prekeys();
    otk->set_id(p.id);
    otk->set_public_key(p.public_key);
  }
  return out;
}

std::optional<e2ee::peer_bundle> from_wire(const v2::PreKeyBundle& b) {
  if (!fits_device(b.device_id())) return std::nullopt;
  e2ee::peer_bundle bundle;
  bundle.username = b.username();
  bundle.device = static_cast<std::int32_t>(b.device_id());
  bundle.registration_id = b.registration_id();
  bundle.identity_key = b.identity_key();
  bundle.signed_prekey = {b.signed_prekey().id(), b.signed_prekey().public_key(),
                          b.signed_prekey().signature()};
  if (b.has_one_time_prekey()) {
    bundle.one_time_prekey =
        e2ee::public_prekey{b.one_time_prekey().id(), b.one_time_prekey().public_key(), {}};
  }
  return bundle;
}

messenger::messenger(client& api, local_store& store, e2ee::library_context& library,
                     std::string me)
    : api_(api), store_(store), engine_(library, store), me_(std::move(me)) {}

// The key work of the coroutines below is done in plain functions: GCC 12 miscompiles
// co_return inside a try block of a coroutine (-Wmismatched-new-delete), and these are
// synchronous anyway.

result<std::optional<e2ee::key_upload>> messenger::keys_to_publish(const v2::Authenticated& auth) {
  const std::uint64_t now = now_ms();
  try {
    local_store::transaction tx(store_);
    std::optional<e2ee::key_upload> keys;
    auto created = engine_.create_identity(now);
    if (!created) return crypto_error(created.error());
    auto registration = engine_.registration_id();
    if (!registration) return crypto_error(registration.error());
    if (!auth.has_keys() || auth.registration_id() != *registration) {
      // First run, or this install's keys are not the server's (a reinstall, or a first
      // upload that failed): publish everything. The server replaces an old identity. Local
      // one-time prekeys of an earlier attempt never reached the server, so no message can
      // use them: dropped, so that failed attempts do not pile them up.
      store_.remove_all_prekeys();
      auto full = engine_.full_upload(prekeys_per_upload);
      if (!full) return crypto_error(full.error());
      keys = std::move(*full);
    } else {
      auto rotated =
          engine_.rotate_signed_prekey(now, signed_prekey_max_age_ms, signed_prekey_keep_ms);
      if (!rotated) return crypto_error(rotated.error());
      if (*rotated) keys = std::move(**rotated);
      if (auth.one_time_prekeys() < prekeys_low_watermark) {
        auto more = engine_.top_up(prekeys_per_upload - auth.one_time_prekeys());
        if (!more) return crypto_error(more.error());
        if (keys) {
          keys->one_time_prekeys = std::move(more->one_time_prekeys);
        } else {
          keys = std::move(*more);
        }
      }
    }
    tx.commit();
    return keys;
  } catch (const std::exception& e) {
    return crypto_error(e.what());
  }
}

result<e2ee::key_upload> messenger::new_prekeys(std::uint32_t remaining) {
  try {
    local_store::transaction tx(store_);
    auto more = engine_.top_up(prekeys_per_upload - remaining);
    if (!more) return crypto_error(more.error());
    tx.commit();
    return std::move(*more);
  } catch (const std::exception& e) {
    return crypto_error(e.what());
  }
}

result<std::int32_t> messenger::start_session(const std::string& peer,
                                              const v2::KeyBundles& bundles) {
  if (bundles.bundles_size() == 0) return crypto_error("the server sent no key bundle");
  // One device per account today: the first bundle is the account's device.
  auto bundle = from_wire(bundles.bundles(0));
  if (!bundle) return crypto_error("device id out of range");
  bundle->username = peer;  // the user asked for, whatever the answer says
  try {
    local_store::transaction tx(store_);
    auto r = engine_.process_bundle(*bundle);
    if (!r) return crypto_error(r.error());
    tx.commit();
    return bundle->device;
  } catch (const std::exception& e) {
    return crypto_error(e.what());
  }
}

std::optional<std::int32_t> messenger::session_device(const std::string& peer) {
  try {
    // One device per account: the device of the session with the peer, if there is one.
    auto devices = store_.session_devices(peer);
    if (!devices.empty()) return devices.front();
  } catch (const std::exception&) {
    // No usable session: a new one is set up (and a broken store reports itself there).
  }
  return std::nullopt;
}

result<void> messenger::record_sent(const sealed_message& m, const v2::SendResult& r) {
  try {
    // The message and the peer's chat together. A duplicate result (a retry) is the first
    // one again: the message is there already.
    local_store::transaction tx(store_);
    store_.add_message({r.message_id(),
                        r.chat_id(),
                        r.seq(),
                        m.peer,
                        message_direction::outgoing,
                        r.sent_at_ms(),
                        m.text,
                        {}});
    tx.commit();
    return {};
  } catch (const std::exception& e) {
    return crypto_error(e.what());
  }
}

awaitable<result<void>> messenger::upload(e2ee::key_upload keys) {
  auto r = co_await api_.upload_keys(to_wire(keys));
  if (!r) co_return r.error();
  co_return result<void>{};
}

awaitable<result<void>> messenger::publish_keys(v2::Authenticated auth) {
  auto keys = keys_to_publish(auth);
  if (!keys) co_return keys.error();
  if (!*keys) co_return result<void>{};
  co_return co_await upload(std::move(**keys));
}

awaitable<result<void>> messenger::top_up(std::uint32_t remaining) {
  if (remaining >= prekeys_per_upload) co_return result<void>{};
  auto keys = new_prekeys(remaining);
  if (!keys) co_return keys.error();
  co_return co_await upload(std::move(*keys));
}

awaitable<result<std::int32_t>> messenger::establish(std::string peer) {
  auto bundles = co_await api_.fetch_keys(peer);
  if (!bundles) co_return bundles.error();
  co_return start_session(peer, *bundles);
}

result<sealed_message> messenger::seal_with_session(const std::string& peer, std::int32_t device,
                                                    const std::string& text) {
  try {
    local_store::transaction tx(store_);
    auto c = engine_.encrypt(peer, device, pad(text));
    if (!c) return crypto_error(c.error());
    auto registration = engine_.remote_registration_id(peer, device);
    if (!registration) return crypto_error(registration.error());
    tx.commit();
    return sealed_message{peer,
                          device,
                          *registration,
                          c->type == e2ee::message_type::prekey ? v2::CIPHER_TYPE_PREKEY_MESSAGE
                                                                : v2::CIPHER_TYPE_SIGNAL_MESSAGE,
                          std::move(c->bytes),
                          text};
  } catch (const std::exception& e) {
    return crypto_error(e.what());
  }
}

awaitable<result<sealed_message>> messenger::seal(std::string peer, std::string text) {
  // One device per account: a session with oneself would be this device's own session
  // record on both ends. Notes to self need multi-device (not yet).
  if (peer == me_) co_return crypto_error("sending to yourself is not supported yet");
  auto device = session_device(peer);
  if (!device) {
    auto d = co_await establish(peer);
    if (!d) co_return d.error();
    device = *d;
  }
  co_return seal_with_session(peer, *device, text);
}

awaitable<result<v2::SendResult>> messenger::send(sealed_message m, std::string client_msg_id) {
  // A retry of a message that was re-encrypted for new keys sends the re-encrypted one: the
  // original was made for keys that no longer exist.
  if (auto it = resealed_.find(client_msg_id); it != resealed_.end()) m = it->second;
  auto r = co_await api_.send(m.peer, client_msg_id, m.payload, m.type, m.registration_id);
  if (!r && r.error().what == client_error::kind::server &&
      r.error().code == v2::ERROR_CODE_STALE_KEYS) {
    // The peer published new keys (a reinstall): nothing was stored; set up a new session on
    // them (recording the identity change) and send the same text again, once.
    auto device = co_await establish(m.peer);
    if (!device) co_return device.error();
    auto again = seal_with_session(m.peer, *device, m.text);
    if (!again) co_return again.error();
    m = std::move(*again);
    resealed_[client_msg_id] = m;
    r = co_await api_.send(m.peer, client_msg_id, m.payload, m.type, m.registration_id);
  }
  if (!r) co_return r.error();
  resealed_.erase(client_msg_id);
  auto recorded = record_sent(m, *r);
  if (!recorded) co_return recorded.error();
  co_return *r;
}

opened_message messenger::open(const v2::Envelope& e) {
  try {
    if (store_.has_message(e.message_id())) return {opened_message::kind::duplicate, {}, {}};
    std::string problem;
    if (!fits_device(e.from_device())) {
      problem = "sender device id out of range";
    } else if (e.type() != v2::CIPHER_TYPE_SIGNAL_MESSAGE &&
               e.type() != v2::CIPHER_TYPE_PREKEY_MESSAGE) {
      problem = "not a Signal-protocol message";
    } else {
      // The decryption and everything it changed (ratchet state, a used one-time prekey, the
      // sender's identity key) are kept only if the message opens: libsignal saves a
      // PreKeySignalMessage's identity key before it checks the MAC, so a forged message
      // must leave no trace.
      const auto device = static_cast<std::int32_t>(e.from_device());
      local_store::transaction tx(store_);
      auto plain =
          engine_.decrypt(e.from(), device,
                          e.type() == v2::CIPHER_TYPE_PREKEY_MESSAGE ? e2ee::message_type::prekey
                                                                     : e2ee::message_type::signal,
                          e.payload());
      if (!plain && plain.error() == e2ee::errc::storage) {
        return {opened_message::kind::not_stored, {}, plain.error().message()};
      }
      if (plain) {
        if (auto text = unpad(*plain)) {
          store_.add_message({e.message_id(),
                              e.chat_id(),
                              e.seq(),
                              e.from(),
                              message_direction::incoming,
                              e.sent_at_ms(),
                              *text,
                              {}});
          tx.commit();
          return {opened_message::kind::text, std::move(*text), {}};
        }
        problem = make_error_code(e2ee::errc::malformed_content).message();
      } else {
        problem = plain.error().message();
      }
    }  // a failed decryption is rolled back here
    local_store::transaction tx(store_);
    store_.add_message({e.message_id(),
                        e.chat_id(),
                        e.seq(),
                        e.from(),
                        message_direction::incoming,
                        e.sent_at_ms(),
                        {},
                        problem});
    tx.commit();
    return {opened_message::kind::undecryptable, {}, std::move(problem)};
  } catch (const std::exception& ex) {
    // The local store failed: nothing was kept, so the envelope must not be acked.
    return {opened_message::kind::not_stored, {}, std::string("local store failed: ") + ex.what()};
  }
}

result<bool> messenger::apply_receipt(const v2::Receipt& r) {
  message_status status = message_status::unknown;
  if (r.status() == v2::MESSAGE_STATUS_DELIVERED) status = message_status::delivered;
  if (r.status() == v2::MESSAGE_STATUS_READ) status = message_status::read;
  if (status == message_status::unknown || r.chat_id() == 0) return false;
  try {
    return store_.raise_watermark(r.chat_id(), r.user(), status, r.up_to_seq());
  } catch (const std::exception& e) {
    return crypto_error(std::string("local store failed: ") + e.what());
  }
}

bool ack_batch::add(const v2::Envelope& e, const opened_message& opened) {
  if (e.chat_id() == 0 || e.seq() == 0) return false;  // not a chat's message: no cursor
  if (opened.what == opened_message::kind::not_stored) {
    blocked_.insert(e.chat_id());
    return false;
  }
  if (blocked_.contains(e.chat_id())) return false;
  auto& seq = pending_[e.chat_id()];
  if (e.seq() > seq) seq = e.seq();
  return true;
}

std::vector<chat_cursor> ack_batch::take(std::size_t max) {
  std::vector<chat_cursor> out;
  while (!pending_.empty() && out.size() < max) {
    auto first = pending_.begin();
    out.push_back({first->first, first->second});
    pending_.erase(first);
  }
  return out;
}

std::vector<e2ee::identity_change> messenger::take_identity_changes() {
  try {
    return store_.take_unseen_identity_changes();
  } catch (const std::exception&) {
    return {};
  }
}

bool messenger::knows_identity(const std::string& peer) {
  try {
    return store_.identity(peer).has_value();
  } catch (const std::exception&) {
    return false;
  }
}

awaitable<result<std::string>> messenger::safety_number(std::string peer) {
  if (!knows_identity(peer)) {
    auto d = co_await establish(peer);
    if (!d) co_return d.error();
  }
  auto n = engine_.safety_number(me_, peer);
  if (!n) co_return crypto_error(n.error());
  co_return *n;
}

}  // namespace parley::client
