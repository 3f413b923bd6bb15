#include "client/messenger.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>

#include "client/media_files.hpp"
#include "client/padding.hpp"
#include "client/profile.hpp"
#include "common/clock.hpp"

namespace parley::client {
namespace asio = boost::asio;
namespace v2 = parley::v2;
namespace content = parley::content::v1;
using asio::awaitable;

namespace {

client_error crypto_error(const boost::system::error_code& ec) {
  return {client_error::kind::crypto, v2::ERROR_CODE_UNSPECIFIED, ec.message()};
}

client_error crypto_error(const std::string& what) {
  return {client_error::kind::crypto, v2::ERROR_CODE_UNSPECIFIED, what};
}

// One device per account: a session with oneself would be this device's own session record
// on both ends. Notes to self need multi-device (not yet).
client_error to_self_error() {
  return {client_error::kind::local, v2::ERROR_CODE_UNSPECIFIED,
          "sending to yourself is not supported yet"};
}

bool fits_device(std::uint64_t device) {
  return device > 0 &&
         device <= static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max());
}

std::string text_content(const std::string& text) {
  content::Content c;
  c.set_text(text);
  return c.SerializeAsString();
}

// The Content inside a decrypted plaintext: nullopt if it is not padded or not a Content.
std::optional<content::Content> parse_content(const std::string& plaintext) {
  auto bytes = unpad(plaintext);
  if (!bytes) return std::nullopt;
  content::Content c;
  if (!c.ParseFromString(*bytes)) return std::nullopt;
  return c;
}

const char* const unknown_content = "a kind of message this parley does not know";

// The client_msg_id of the 1:1 message that gives `member` key `key_id` for the group message
// `client_msg_id`: derived, so that a retry of the group message names the same one (and the
// server stores it once); 42 bytes whatever the inputs, within the 64 allowed. nullopt if
// OpenSSL fails.
std::optional<std::string> key_message_id(const std::string& client_msg_id,
                                          const std::string& member, std::uint32_t key_id) {
  const std::string input = client_msg_id + '\n' + member + '\n' + std::to_string(key_id);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
    return std::nullopt;
  }
  return "sk" + to_hex(std::string(reinterpret_cast<const char*>(digest), 20));
}

bool is_server_error(const client_error& e, v2::ErrorCode code) {
  return e.what == client_error::kind::server && e.code == code;
}

// A failure of the local store (what it threw), as a client_error.
client_error store_error(const std::exception& e) {
  return crypto_error(std::string("local store failed: ") + e.what());
}

// What open() returns when the local store threw: nothing was kept, so the envelope must not be
// acked.
opened_message not_stored(const std::exception& e) {
  return {opened_message::kind::not_stored, {}, std::string("local store failed: ") + e.what()};
}

// The history's record of a message this account sent (`r`) in chat `chat_id`; `peer` as
// local_message has it (in a group: this account).
local_message outgoing_record(const v2::SendResult& r, std::uint64_t chat_id,
                              const std::string& peer, const std::string& text) {
  return {r.message_id(), chat_id, r.seq(), peer, message_direction::outgoing,
          r.sent_at_ms(), text,    {}};
}

// Why a decrypted group message shows nothing: `c` is its Content (nullopt: not a padded
// Content), one without a text.
std::string group_problem(const std::optional<content::Content>& c) {
  if (!c) return make_error_code(e2ee::errc::malformed_content).message();
  return c->has_sender_key() ? "a sender key sent in the group itself" : unknown_content;
}

}  // namespace

local_message incoming_record(const v2::Envelope& e, std::string text, std::string problem,
                              message_kind kind) {
  return {e.message_id(),
          e.chat_id(),
          e.seq(),
          e.from(),
          message_direction::incoming,
          e.sent_at_ms(),
          std::move(text),
          std::move(problem),
          kind};
}

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
                     std::string me, std::uint64_t device_id)
    : api_(api),
      store_(store),
      engine_(library, store),
      me_(std::move(me)),
      device_(fits_device(device_id) ? static_cast<std::int32_t>(device_id) : 1) {}

// The key work of the coroutines below is done in plain functions: GCC 12 miscompiles
// co_return inside a try block of a coroutine (-Wmismatched-new-delete), and these are
// synchronous anyway.

[[gnu::noinline]] result<std::optional<e2ee::key_upload>> messenger::keys_to_publish(
    const v2::Authenticated& auth) {
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

[[gnu::noinline]] result<e2ee::key_upload> messenger::new_prekeys(std::uint32_t remaining) {
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

[[gnu::noinline]] result<std::int32_t> messenger::start_session(const std::string& peer,
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

[[gnu::noinline]] std::optional<std::int32_t> messenger::session_device(const std::string& peer) {
  try {
    // One device per account: the device of the session with the peer, if there is one.
    auto devices = store_.session_devices(peer);
    if (!devices.empty()) return devices.front();
  } catch (const std::exception&) {
    // No usable session: a new one is set up (and a broken store reports itself there).
  }
  return std::nullopt;
}

void messenger::warn_unrecorded(const v2::SendResult& r, const client_error& e) const {
  if (warn_) {
    warn_("sent (chat " + std::to_string(r.chat_id()) + ", seq " + std::to_string(r.seq()) +
          ") but not recorded in this device's history: " + e.message);
  }
}

[[gnu::noinline]] result<void> messenger::record_sent(const sealed_message& m,
                                                      const v2::SendResult& r) {
  try {
    // The message and the peer's chat together. A duplicate result (a retry) is the first
    // one again: the message is there already.
    if (m.control) return {};  // a sender key: nothing to show
    local_store::transaction tx(store_);
    store_.add_message(outgoing_record(r, r.chat_id(), m.peer, m.text));
    if (!m.media.empty()) store_.put_media(r.message_id(), r.chat_id(), r.seq(), m.media);
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

awaitable<result<void>> messenger::prepare_session(std::string peer) {
  if (peer == me_) co_return to_self_error();
  if (session_device(peer)) co_return result<void>{};
  auto d = co_await establish(peer);
  if (!d) co_return d.error();
  co_return result<void>{};
}

awaitable<result<std::int32_t>> messenger::establish(std::string peer) {
  auto bundles = co_await api_.fetch_keys(peer);
  if (!bundles) co_return bundles.error();
  co_return start_session(peer, *bundles);
}

[[gnu::noinline]] result<sealed_message> messenger::seal_with_session(const std::string& peer,
                                                                      std::int32_t device,
                                                                      const std::string& content,
                                                                      const std::string& text,
                                                                      bool control) {
  try {
    local_store::transaction tx(store_);
    auto c = engine_.encrypt(peer, device, pad(content));
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
                          text,
                          content,
                          control,
                          {},
                          {}};
  } catch (const std::exception& e) {
    return crypto_error(e.what());
  }
}

awaitable<result<sealed_message>> messenger::seal_content(std::string peer, std::string content,
                                                          std::string text, bool control) {
  if (peer == me_) co_return to_self_error();
  auto device = session_device(peer);
  if (!device) {
    auto d = co_await establish(peer);
    if (!d) co_return d.error();
    device = *d;
  }
  co_return seal_with_session(peer, *device, content, text, control);
}

awaitable<result<sealed_message>> messenger::seal(std::string peer, std::string text) {
  auto content = text_content(text);
  co_return co_await seal_content(std::move(peer), std::move(content), std::move(text), false);
}

// GCC 12 warns -Wmismatched-new-delete on this coroutine's frame, wrongly (GCC bug 109224):
// it sees Asio's awaitable_frame_base::operator delete free memory that operator new got from
// ::operator new inside Asio's recycling allocator, which is the pair Asio means. Only here.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
awaitable<result<v2::SendResult>> messenger::send(sealed_message m, std::string client_msg_id) {
  // A retry of a message that was re-encrypted for new keys sends the re-encrypted one: the
  // original was made for keys that no longer exist.
  if (auto it = resealed_.find(client_msg_id); it != resealed_.end()) m = it->second;
  auto r = co_await api_.send(m.peer, client_msg_id, m.payload, m.type, m.registration_id,
                              m.media_id);
  if (!r && r.error().what == client_error::kind::server &&
      r.error().code == v2::ERROR_CODE_STALE_KEYS) {
    // The peer published new keys (a reinstall): nothing was stored; set up a new session on
    // them (recording the identity change) and send the same text again, once.
    auto device = co_await establish(m.peer);
    if (!device) co_return device.error();
    auto again = seal_with_session(m.peer, *device, m.content, m.text, m.control);
    if (!again) co_return again.error();
    again->media_id = std::move(m.media_id);
    again->media = std::move(m.media);
    m = std::move(*again);
    resealed_[client_msg_id] = m;
    r = co_await api_.send(m.peer, client_msg_id, m.payload, m.type, m.registration_id,
                           m.media_id);
  }
  if (!r) co_return r.error();
  resealed_.erase(client_msg_id);
  // The server has it: a failure to write the local history must not read as a failed send
  // (a retry with a new client_msg_id would send it twice).
  if (auto recorded = record_sent(m, *r); !recorded) warn_unrecorded(*r, recorded.error());
  co_return *r;
}
#pragma GCC diagnostic pop

opened_message messenger::record_undecryptable(const v2::Envelope& e, std::string problem,
                                               bool group) {
  local_store::transaction tx(store_);
  if (group) store_.set_group(e.chat_id(), {});
  store_.add_message(incoming_record(e, {}, problem));
  tx.commit();
  return {opened_message::kind::undecryptable, {}, std::move(problem)};
}

opened_message messenger::record_media(local_store::transaction& tx, const v2::Envelope& e,
                                       const content::Media& m) {
  auto text = describe_media(m);
  store_.add_message(incoming_record(e, text));
  store_.put_media(e.message_id(), e.chat_id(), e.seq(), m.SerializeAsString());
  tx.commit();
  return {opened_message::kind::text, std::move(text), {}};
}

opened_message messenger::record_text(local_store::transaction& tx, const v2::Envelope& e,
                                      const std::string& text) {
  store_.add_message(incoming_record(e, text));
  tx.commit();
  return {opened_message::kind::text, text, {}};
}

opened_message messenger::open(const v2::Envelope& e) {
  if (e.has_event()) return open_event(e);
  if (e.type() == v2::CIPHER_TYPE_SENDER_KEY_MESSAGE) return open_group(e);
  return open_pairwise(e);
}

[[gnu::noinline]] opened_message messenger::open_pairwise(const v2::Envelope& e) {
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
      // sender's identity key, a sender key it carried) are kept only if the message opens:
      // libsignal saves a PreKeySignalMessage's identity key before it checks the MAC, so a
      // forged message must leave no trace.
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
        auto c = parse_content(*plain);
        if (!c) {
          problem = make_error_code(e2ee::errc::malformed_content).message();
        } else if (c->has_text()) {
          return record_text(tx, e, c->text());
        } else if (c->has_media()) {
          auto bad = media_problem(c->media());
          if (!bad) return record_media(tx, e, c->media());
          problem = *bad;
        } else if (c->has_sender_key()) {
          std::vector<local_message> released;
          problem = take_sender_key(e.from(), device, c->sender_key(), released);
          if (problem.empty()) {
            // Kept (hidden) so that a repeated push of it is known as a duplicate: its message
            // key is used, a second decryption would fail.
            store_.add_message(incoming_record(e, {}, {}, message_kind::control));
            tx.commit();
            released_.insert(released_.end(), released.begin(), released.end());
            return {opened_message::kind::sender_key, {}, {}};
          }
        } else {
          problem = unknown_content;
        }
      } else {
        problem = plain.error().message();
      }
    }  // a failed decryption is rolled back here
    return record_undecryptable(e, std::move(problem), false);
  } catch (const std::exception& ex) {
    return not_stored(ex);
  }
}

std::string messenger::take_sender_key(const std::string& from, std::int32_t device,
                                       const content::SenderKeyDistribution& key,
                                       std::vector<local_message>& released) {
  if (key.chat_id() == 0) return make_error_code(e2ee::errc::malformed_content).message();
  const e2ee::group_sender sender{e2ee::group_of(key.chat_id()), from, device};
  auto kept = engine_.process_sender_key(sender, key.message());
  if (!kept && kept.error() == e2ee::errc::storage)
    throw std::runtime_error(kept.error().message());
  if (!kept) return "a sender key that could not be used: " + kept.error().message();
  // The group messages that waited for it, in the chat's order. One made with another key of
  // the same sender (an older or newer one) waits on.
  for (const auto& p : store_.pending_from(key.chat_id(), from, device)) {
    auto plain = engine_.group_decrypt(sender, p.payload);
    if (!plain && plain.error() == e2ee::errc::no_sender_key) continue;
    if (!plain && plain.error() == e2ee::errc::storage) {
      throw std::runtime_error(plain.error().message());
    }
    local_message m{p.server_id,  p.chat_id, p.seq, p.sender, message_direction::incoming,
                    p.sent_at_ms, {},        {}};
    if (!plain) {
      m.problem = plain.error().message();
    } else if (auto c = parse_content(*plain); c && c->has_text()) {
      m.text = c->text();
    } else if (c && c->has_media() && !media_problem(c->media())) {
      m.text = describe_media(c->media());
      store_.put_media(p.server_id, p.chat_id, p.seq, c->media().SerializeAsString());
    } else if (c && c->has_media()) {
      m.problem = *media_problem(c->media());
    } else {
      m.problem = group_problem(c);
    }
    store_.add_message(m);
    store_.remove_pending(p.server_id);
    released.push_back(std::move(m));
  }
  // A key for a group this account has left is kept until settle_left_groups(): the 1:1 chat
  // that carries it can drain before the group's ADD that makes this account a member again,
  // and the key is then the one its next messages need. If the account is still out then,
  // the key served only the messages above.
  return {};
}

result<void> messenger::settle_left_groups() {
  return in_transaction([&] {
    for (const auto& g : store_.groups()) {
      if (g.member) continue;
      auto forgotten = engine_.forget_group(e2ee::group_of(g.chat_id));
      if (!forgotten) throw std::runtime_error(forgotten.error().message());
    }
  });
}

[[gnu::noinline]] opened_message messenger::open_group(const v2::Envelope& e) {
  try {
    if (store_.has_message(e.message_id()) || store_.has_pending(e.message_id())) {
      return {opened_message::kind::duplicate, {}, {}};
    }
    std::string problem;
    if (!fits_device(e.from_device())) {
      problem = "sender device id out of range";
    } else if (e.from() == me_ && static_cast<std::int32_t>(e.from_device()) == device_) {
      // This device's own message that send_group did not get to record: a sender's chain
      // keeps no keys of what it encrypted, so it cannot be opened here.
      problem = "sent from this device; its text was not recorded";
    } else {
      const auto device = static_cast<std::int32_t>(e.from_device());
      local_store::transaction tx(store_);
      store_.set_group(e.chat_id(), {});  // known from now on (a group message, not a 1:1 one)
      auto plain =
          engine_.group_decrypt({e2ee::group_of(e.chat_id()), e.from(), device}, e.payload());
      if (!plain && plain.error() == e2ee::errc::storage) {
        return {opened_message::kind::not_stored, {}, plain.error().message()};
      }
      if (!plain && plain.error() == e2ee::errc::no_sender_key) {
        // The key may still be on its way in the 1:1 chat with the sender: kept, and opened
        // when it comes (take_sender_key).
        store_.add_pending(
            {e.message_id(), e.chat_id(), e.seq(), e.from(), device, e.sent_at_ms(), e.payload()});
        tx.commit();
        return {opened_message::kind::pending, {}, "waiting for " + e.from() + "'s sender key"};
      }
      if (plain) {
        auto c = parse_content(*plain);
        if (c && c->has_text()) return record_text(tx, e, c->text());
        if (c && c->has_media()) {
          auto bad = media_problem(c->media());
          if (!bad) return record_media(tx, e, c->media());
          problem = *bad;
        } else {
          problem = group_problem(c);
        }
      } else {
        problem = plain.error().message();
      }
    }  // a failed decryption is rolled back here
    return record_undecryptable(e, std::move(problem), true);
  } catch (const std::exception& ex) {
    return not_stored(ex);
  }
}

[[gnu::noinline]] opened_message messenger::open_event(const v2::Envelope& e) {
  try {
    if (store_.has_message(e.message_id())) return {opened_message::kind::duplicate, {}, {}};
    auto text = describe_event(e);
    // The change and its record together: a crash in between cannot leave a removal recorded
    // but the key it retires still in use, or the other way round.
    local_store::transaction tx(store_);
    apply_event(e);
    store_.add_message(incoming_record(e, text, {}, message_kind::event));
    store_.put_group_event(e.message_id(), e.event().SerializeAsString());
    tx.commit();
    return {opened_message::kind::event, std::move(text), {}};
  } catch (const std::exception& ex) {
    return not_stored(ex);
  }
}

e2ee::group_sender messenger::own_key_of(std::uint64_t chat_id) const {
  return {e2ee::group_of(chat_id), me_, device_};
}

void messenger::rotate_if_held(std::uint64_t chat_id, const std::string& user) {
  const auto holders = store_.sender_key_holders(chat_id);
  const auto held = holders.find(user);
  if (held == holders.end()) return;  // never given this device's key: nothing to retire
  auto current = engine_.own_sender_key_id(own_key_of(chat_id));
  if (!current) throw std::runtime_error(current.error().message());
  if (!*current || **current != held->second.key_id) return;  // had an older, retired key
  auto forgotten = engine_.forget_sender_key(own_key_of(chat_id));
  if (!forgotten) throw std::runtime_error(forgotten.error().message());
  store_.forget_sender_key_holders(chat_id);
}

void messenger::forget_group_locally(std::uint64_t chat_id) {
  auto forgotten = engine_.forget_group(e2ee::group_of(chat_id));
  if (!forgotten) throw std::runtime_error(forgotten.error().message());
  store_.forget_sender_key_holders(chat_id);
  store_.set_group_member(chat_id, false);
}

void messenger::apply_event(const v2::Envelope& e) {
  const auto& ev = e.event();
  const auto chat = e.chat_id();
  store_.set_group(chat,
                   ev.change() == v2::GROUP_CHANGE_CREATE || ev.change() == v2::GROUP_CHANGE_RENAME
                       ? ev.name()
                       : std::string());
  switch (ev.change()) {
    case v2::GROUP_CHANGE_CREATE:
      store_.set_group_member(chat, true);  // pushed to members only
      break;
    case v2::GROUP_CHANGE_ADD:
      if (ev.user() == me_) store_.set_group_member(chat, true);
      break;
    case v2::GROUP_CHANGE_REMOVE:
    case v2::GROUP_CHANGE_LEAVE: {
      const std::string& who = ev.user().empty() ? e.from() : ev.user();
      if (who == me_) {
        // Its own key and holders go now; the copies of the others' keys in
        // settle_left_groups(), in case an ADD of this account follows in the same drain,
        // after a key message that the 1:1 chat drained first.
        auto forgotten = engine_.forget_sender_key(own_key_of(chat));
        if (!forgotten) throw std::runtime_error(forgotten.error().message());
        store_.forget_sender_key_holders(chat);
        store_.set_group_member(chat, false);
      } else {
        rotate_if_held(chat, who);
      }
      break;
    }
    default:
      break;
  }
}

std::string messenger::describe_event(const v2::Envelope& e) {
  const auto& ev = e.event();
  const std::string who = e.from().empty() ? "the server" : e.from();
  switch (ev.change()) {
    case v2::GROUP_CHANGE_CREATE: {
      std::string others;
      for (const auto& m : ev.members()) {
        if (m == e.from()) continue;
        others += (others.empty() ? "" : ", ") + m;
      }
      return who + " created the group \"" + ev.name() + "\"" +
             (others.empty() ? std::string() : " with " + others);
    }
    case v2::GROUP_CHANGE_ADD:
      return who + " added " + ev.user();
    case v2::GROUP_CHANGE_REMOVE:
      return who + " removed " + ev.user();
    case v2::GROUP_CHANGE_PROMOTE:
      if (e.from().empty()) return ev.user() + " is now an admin (the last admin left)";
      return who + " made " + ev.user() + " an admin";
    case v2::GROUP_CHANGE_DEMOTE:
      if (ev.user() == e.from()) return who + " is no longer an admin";
      return who + " removed " + ev.user() + " as admin";
    case v2::GROUP_CHANGE_RENAME:
      return who + " renamed the group to \"" + ev.name() + "\"";
    case v2::GROUP_CHANGE_LEAVE:
      return (ev.user().empty() ? who : ev.user()) + " left";
    default:
      return who + " changed the group";
  }
}

std::vector<local_message> messenger::take_released() {
  std::vector<local_message> out;
  out.swap(released_);
  return out;
}

[[gnu::noinline]] result<bool> messenger::apply_receipt(const v2::Receipt& r) {
  message_status status = message_status::unknown;
  if (r.status() == v2::MESSAGE_STATUS_DELIVERED) status = message_status::delivered;
  if (r.status() == v2::MESSAGE_STATUS_READ) status = message_status::read;
  if (status == message_status::unknown || r.chat_id() == 0) return false;
  try {
    // A group's Receipt has no user: the watermark of all the other members, kept under the
    // peer "" of the chat (local_store derives a group message's status from it).
    return store_.raise_watermark(r.chat_id(), r.user(), status, r.up_to_seq());
  } catch (const std::exception& e) {
    return store_error(e);
  }
}

// --- groups ------------------------------------------------------------------------------------

[[gnu::noinline]] result<void> messenger::in_transaction(const std::function<void()>& change) {
  try {
    local_store::transaction tx(store_);
    change();
    tx.commit();
    return {};
  } catch (const std::exception& e) {
    return store_error(e);
  }
}

result<void> messenger::remember_group(const v2::GroupInfo& info) {
  return in_transaction([&] {
    store_.set_group(info.chat_id(), info.name());
    const bool member = std::any_of(info.members().begin(), info.members().end(),
                                    [&](const v2::GroupMember& m) { return m.user() == me_; });
    if (member) {
      store_.set_group_member(info.chat_id(), true);
    } else if (store_.group(info.chat_id())->member) {
      forget_group_locally(info.chat_id());
    }
  });
}

result<void> messenger::after_update(std::uint64_t chat_id, v2::GroupChange change,
                                     const std::string& user, const v2::GroupInfo& info) {
  // What the change's event will do when it is pushed back, done now: a message sent before
  // that event is opened must not use a key the removed member has. (The event then finds the
  // key retired and changes nothing more.)
  const bool gone =
      change == v2::GROUP_CHANGE_LEAVE || (change == v2::GROUP_CHANGE_REMOVE && user == me_);
  auto changed = in_transaction([&] {
    if (gone) {
      store_.set_group(chat_id, info.name());
      forget_group_locally(chat_id);
    } else if (change == v2::GROUP_CHANGE_REMOVE) {
      rotate_if_held(chat_id, user);
    }
  });
  if (!changed || gone) return changed;
  return remember_group(info);
}

result<void> messenger::after_not_found(std::uint64_t chat_id) {
  return in_transaction([&] {
    if (auto g = store_.group(chat_id); g && g->member) forget_group_locally(chat_id);
  });
}

awaitable<result<v2::GroupInfo>> messenger::create_group(std::string name,
                                                         std::vector<std::string> members,
                                                         std::string client_request_id) {
  auto info = co_await api_.create_group(std::move(name), std::move(members),
                                         std::move(client_request_id));
  if (!info) co_return info.error();
  auto kept = remember_group(*info);
  if (!kept) co_return kept.error();
  co_return *info;
}

awaitable<result<v2::GroupInfo>> messenger::update_group(std::uint64_t chat_id,
                                                         v2::GroupChange change, std::string user,
                                                         std::string name) {
  auto info = co_await api_.update_group(chat_id, change, user, std::move(name));
  if (!info) {
    if (is_server_error(info.error(), v2::ERROR_CODE_NOT_FOUND)) {
      auto kept = after_not_found(chat_id);
      if (!kept) co_return kept.error();
    }
    co_return info.error();
  }
  auto kept = after_update(chat_id, change, user, *info);
  if (!kept) co_return kept.error();
  co_return *info;
}

awaitable<result<v2::GroupInfo>> messenger::get_group(std::uint64_t chat_id) {
  auto info = co_await api_.get_group(chat_id);
  if (!info) {
    if (is_server_error(info.error(), v2::ERROR_CODE_NOT_FOUND)) {
      auto kept = after_not_found(chat_id);
      if (!kept) co_return kept.error();
    }
    co_return info.error();
  }
  auto kept = remember_group(*info);
  if (!kept) co_return kept.error();
  co_return *info;
}

// What send_group must do before it encrypts: the key to encrypt with, and the members to give
// it to first.
struct messenger::group_send_plan {
  e2ee::sender_key_distribution key;
  std::vector<v2::GroupMember> missing;
};

[[gnu::noinline]] result<messenger::group_send_plan> messenger::plan_group_send(
    const v2::GroupInfo& info) {
  const auto chat = info.chat_id();
  const auto self = own_key_of(chat);
  try {
    local_store::transaction tx(store_);
    store_.set_group(chat, info.name());
    store_.set_group_member(chat, true);
    std::map<std::string, std::uint64_t> joined;  // member -> joined_seq
    for (const auto& m : info.members()) joined[m.user()] = m.joined_seq();
    // The member list is the server's now; the events may not have been opened yet. A holder
    // of the current key who is no longer a member, or who left and came back since it got
    // the key, must not read what is sent from now on: a new key.
    auto current = engine_.own_sender_key_id(self);
    if (!current) return crypto_error(current.error());
    auto holders = store_.sender_key_holders(chat);
    if (*current) {
      for (const auto& [user, held] : holders) {
        const auto member = joined.find(user);
        if (held.key_id == **current &&
            (member == joined.end() || member->second != held.joined_seq)) {
          auto forgotten = engine_.forget_sender_key(self);
          if (!forgotten) return crypto_error(forgotten.error());
          store_.forget_sender_key_holders(chat);
          holders.clear();
          break;
        }
      }
    }
    auto key = engine_.own_sender_key(self);  // made here if there is none
    if (!key) return crypto_error(key.error());
    group_send_plan plan{std::move(*key), {}};
    for (const auto& m : info.members()) {
      if (m.user() == me_) continue;
      const auto held = holders.find(m.user());
      if (held == holders.end() || !held->second.delivered ||
          held->second.key_id != plan.key.key_id || held->second.joined_seq != m.joined_seq()) {
        plan.missing.push_back(m);
      }
    }
    tx.commit();
    return plan;
  } catch (const std::exception& e) {
    return store_error(e);
  }
}

result<void> messenger::mark_holder(std::uint64_t chat_id, const std::string& member,
                                    const key_holder& holder) {
  return in_transaction([&] { store_.add_sender_key_holder(chat_id, member, holder); });
}

// GCC 12's -Wmismatched-new-delete on these coroutines' frames is wrong (GCC bug 109224; see
// messenger::send above).
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
// The server's flow control on a group send's many requests (a first message to a full group
// is 1,024 sends, each after the member list): runs `request` (a callable returning an
// awaitable<result<T>>), and after RATE_LIMITED or BUSY waits the retry_after_ms the server
// asked for (at least 10 ms, at most 10 s) and runs it again, so that the same request (the
// same client_msg_id) is made again; at most `max_flow_waits` times. Any other outcome is
// returned as it is.
namespace {
constexpr int max_flow_waits = 5;
template <class Request>
auto with_flow_waits(Request request) -> decltype(request()) {
  auto r = co_await request();
  for (int waits = 0; waits < max_flow_waits && !r &&
                      (is_server_error(r.error(), v2::ERROR_CODE_RATE_LIMITED) ||
                       is_server_error(r.error(), v2::ERROR_CODE_BUSY));
       ++waits) {
    const auto ms = std::clamp<std::uint32_t>(r.error().retry_after_ms, 10, 10'000);
    boost::asio::steady_timer pause(co_await boost::asio::this_coro::executor,
                                    std::chrono::milliseconds(ms));
    co_await pause.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    r = co_await request();
  }
  co_return r;
}
}  // namespace

awaitable<result<void>> messenger::give_sender_key(std::uint64_t chat_id, v2::GroupMember member,
                                                   e2ee::sender_key_distribution key,
                                                   std::string client_msg_id) {
  content::Content c;
  c.mutable_sender_key()->set_chat_id(chat_id);
  c.mutable_sender_key()->set_message(key.message);
  std::string no_text;  // GCC 12: no braced list inside a co_await's arguments
  auto sealed = co_await seal_content(member.user(), c.SerializeAsString(), no_text, true);
  if (!sealed) co_return sealed.error();
  // Recorded as a (possible) holder before it can arrive: if this process stops between the
  // send and its answer, a later removal of the member still retires the key.
  const key_holder holder{key.key_id, member.joined_seq(), false};
  auto noted = mark_holder(chat_id, member.user(), holder);
  if (!noted) co_return noted.error();
  auto id = key_message_id(client_msg_id, member.user(), key.key_id);
  if (!id) co_return crypto_error("SHA-256 failed");
  auto send_key = [&] { return send(*sealed, *id); };
  auto sent = co_await with_flow_waits(send_key);
  if (!sent) co_return sent.error();
  co_return mark_holder(chat_id, member.user(), {key.key_id, member.joined_seq(), true});
}

// One give_sender_keys: the members, the next one to start, and what came of them so far.
// Shared by its workers, which all run on the messenger's (single-threaded) executor.
struct messenger::key_round {
  std::uint64_t chat_id = 0;
  e2ee::sender_key_distribution key;
  std::string client_msg_id;
  std::vector<v2::GroupMember> members;
  std::size_t next = 0;
  std::vector<std::size_t> no_keys;  // indexes into members
  std::optional<client_error> failed;
  std::exception_ptr thrown;
  std::size_t running = 0;  // workers not finished
};

awaitable<void> messenger::key_worker(std::shared_ptr<key_round> round) {
  while (!round->failed && round->next < round->members.size()) {
    const std::size_t i = round->next++;
    auto given = co_await give_sender_key(round->chat_id, round->members[i], round->key,
                                          round->client_msg_id);
    if (given) continue;
    if (is_server_error(given.error(), v2::ERROR_CODE_NO_KEYS)) {
      round->no_keys.push_back(i);
    } else if (!round->failed) {
      round->failed = given.error();
    }
  }
}

awaitable<result<std::vector<std::string>>> messenger::give_sender_keys(
    std::uint64_t chat_id, std::vector<v2::GroupMember> members,
    e2ee::sender_key_distribution key, std::string client_msg_id) {
  auto ex = co_await boost::asio::this_coro::executor;
  auto round = std::make_shared<key_round>();
  round->chat_id = chat_id;
  round->key = std::move(key);
  round->client_msg_id = std::move(client_msg_id);
  round->members = std::move(members);
  auto finished = std::make_shared<boost::asio::steady_timer>(
      ex, boost::asio::steady_timer::time_point::max());
  const auto workers = std::min(key_messages_in_flight, round->members.size());
  round->running = workers;
  for (std::size_t w = 0; w < workers; ++w) {
    boost::asio::co_spawn(ex, key_worker(round), [round, finished](std::exception_ptr e) {
      if (e && !round->thrown) round->thrown = e;
      if (--round->running == 0) finished->cancel();
    });
  }
  // A worker may finish before this waits (co_spawn can run it inline up to its first
  // suspension): the count, not the cancel, says when all are done.
  while (round->running > 0) {
    co_await finished->async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }
  if (round->thrown) std::rethrow_exception(round->thrown);
  if (round->failed) co_return *round->failed;
  std::sort(round->no_keys.begin(), round->no_keys.end());
  std::vector<std::string> out;
  out.reserve(round->no_keys.size());
  for (const auto i : round->no_keys) out.push_back(round->members[i].user());
  co_return out;
}

[[gnu::noinline]] result<std::string> messenger::seal_group(std::uint64_t chat_id,
                                                            const std::string& content,
                                                            const std::string& client_msg_id) {
  try {
    auto current = engine_.own_sender_key_id(own_key_of(chat_id));
    if (!current) return crypto_error(current.error());
    if (auto it = group_sealed_.find(client_msg_id);
        it != group_sealed_.end() && *current && it->second.key_id == **current) {
      return it->second.bytes;
    }
    local_store::transaction tx(store_);
    auto c = engine_.group_encrypt(own_key_of(chat_id), pad(content));
    if (!c) return crypto_error(c.error());
    auto used = engine_.own_sender_key_id(own_key_of(chat_id));
    if (!used) return crypto_error(used.error());
    tx.commit();
    group_sealed_[client_msg_id] = {used->value_or(0), c->bytes};
    return std::move(c->bytes);
  } catch (const std::exception& e) {
    return crypto_error(e.what());
  }
}

[[gnu::noinline]] result<void> messenger::record_group_sent(std::uint64_t chat_id,
                                                            const std::string& text,
                                                            const std::string& media,
                                                            const v2::SendResult& r) {
  try {
    local_store::transaction tx(store_);
    store_.set_group(chat_id, {});
    store_.add_message(outgoing_record(r, chat_id, me_, text));
    if (!media.empty()) store_.put_media(r.message_id(), chat_id, r.seq(), media);
    tx.commit();
    return {};
  } catch (const std::exception& e) {
    return crypto_error(e.what());
  }
}

awaitable<result<group_sent>> messenger::send_group(std::uint64_t chat_id, std::string text,
                                                    std::string client_msg_id) {
  auto content = text_content(text);
  co_return co_await send_group_content(chat_id, std::move(content), std::move(text),
                                        std::move(client_msg_id), {}, {});
}

awaitable<result<group_sent>> messenger::send_group_media(std::uint64_t chat_id, content::Media m,
                                                          std::string client_msg_id) {
  content::Content c;
  *c.mutable_media() = m;
  auto shown = describe_media(m);
  auto media_id = m.media_id();
  co_return co_await send_group_content(chat_id, c.SerializeAsString(), std::move(shown),
                                        std::move(client_msg_id), std::move(media_id),
                                        m.SerializeAsString());
}

awaitable<result<sealed_message>> messenger::seal_media(std::string peer, content::Media m) {
  content::Content c;
  *c.mutable_media() = m;
  auto sealed = co_await seal_content(std::move(peer), c.SerializeAsString(), describe_media(m),
                                      false);
  if (!sealed) co_return sealed.error();
  sealed->media_id = m.media_id();
  sealed->media = m.SerializeAsString();
  co_return sealed;
}

awaitable<result<group_sent>> messenger::send_group_content(std::uint64_t chat_id,
                                                            std::string content,
                                                            std::string shown,
                                                            std::string client_msg_id,
                                                            std::string media_id,
                                                            std::string media) {
  // The current members, as the server has them (NOT_FOUND: no longer one of them).
  auto ask_members = [&] { return get_group(chat_id); };
  auto info = co_await with_flow_waits(ask_members);
  if (!info) co_return info.error();
  auto plan = plan_group_send(*info);
  if (!plan) co_return plan.error();
  group_sent out;
  // A member who never published keys cannot be given one (nor read anything); the others
  // still get the message. Any other failure (connection, store) stops the send before the
  // group message: a retry picks up where this one stopped (plan_group_send skips the members
  // whose key message was answered).
  auto not_reached = co_await give_sender_keys(chat_id, std::move(plan->missing), plan->key,
                                               client_msg_id);
  if (!not_reached) co_return not_reached.error();
  out.not_reached = std::move(*not_reached);
  auto payload = seal_group(chat_id, content, client_msg_id);
  if (!payload) co_return payload.error();
  auto send_message = [&] {
    return api_.send_to_chat(chat_id, client_msg_id, *payload,
                             v2::CIPHER_TYPE_SENDER_KEY_MESSAGE, 0, media_id);
  };
  auto r = co_await with_flow_waits(send_message);
  if (!r) co_return r.error();
  group_sealed_.erase(client_msg_id);
  if (auto recorded = record_group_sent(chat_id, shown, media, *r); !recorded)
    warn_unrecorded(*r, recorded.error());
  out.result = *r;
  co_return out;
}

#pragma GCC diagnostic pop

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

[[gnu::noinline]] std::vector<e2ee::identity_change> messenger::take_identity_changes() {
  try {
    return store_.take_unseen_identity_changes();
  } catch (const std::exception&) {
    return {};
  }
}

[[gnu::noinline]] bool messenger::knows_identity(const std::string& peer) {
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
