#include "e2ee/signal_engine.hpp"

#include <signal/curve.h>
#include <signal/fingerprint.h>
#include <signal/group_cipher.h>
#include <signal/group_session_builder.h>
#include <signal/key_helper.h>
#include <signal/protocol.h>
#include <signal/ratchet.h>
#include <signal/sender_key_record.h>
#include <signal/sender_key_state.h>
#include <signal/session_builder.h>
#include <signal/session_cipher.h>
#include <signal/session_pre_key.h>
#include <signal/signal_protocol.h>

#include <charconv>
#include <stdexcept>
#include <string_view>

#include "common/clock.hpp"

namespace parley::e2ee {
namespace {

constexpr std::string_view meta_identity_public = "identity_public";
constexpr std::string_view meta_identity_private = "identity_private";
constexpr std::string_view meta_registration_id = "registration_id";
constexpr std::string_view meta_next_prekey_id = "next_prekey_id";
constexpr std::string_view meta_next_signed_prekey_id = "next_signed_prekey_id";

// libsignal's prekey ids live in 1..0xFFFFFE (Medium.MAX_VALUE - 1).
constexpr std::uint32_t max_prekey_id = 0xFFFFFE;
// Signal's fingerprint parameters: 5200 SHA-512 iterations. The version passed to libsignal
// (1) only selects the format of the scannable fingerprint, which parley does not use; the
// displayed digits always come from libsignal's version-0 hash iteration (docs/security.md,
// "Safety numbers").
constexpr int fingerprint_iterations = 5200;
constexpr int scannable_fingerprint_version = 1;

// Owns one reference to a libsignal object.
template <class T>
struct ref {
  T* p = nullptr;
  ref() = default;
  explicit ref(T* v) : p(v) {}
  ref(const ref&) = delete;
  ref& operator=(const ref&) = delete;
  ref(ref&& o) noexcept : p(o.p) { o.p = nullptr; }
  ~ref() {
    if (p) SIGNAL_UNREF(p);
  }
  T** out() { return &p; }
  T* get() const { return p; }
  explicit operator bool() const { return p != nullptr; }
};

struct buffer {
  signal_buffer* p = nullptr;
  ~buffer() {
    if (p) signal_buffer_bzero_free(p);
  }
  signal_buffer** out() { return &p; }
  std::string str() const {
    return p ? std::string(reinterpret_cast<const char*>(signal_buffer_const_data(p)),
                           signal_buffer_len(p))
             : std::string();
  }
};

const std::uint8_t* bytes(std::string_view s) {
  return reinterpret_cast<const std::uint8_t*>(s.data());
}

signal_buffer* to_buffer(const std::string& s) { return signal_buffer_create(bytes(s), s.size()); }

std::string serialize(const ec_public_key* key) {
  buffer b;
  if (ec_public_key_serialize(b.out(), key) != 0) throw std::runtime_error("serialize key");
  return b.str();
}

std::uint32_t parse_u32(const std::optional<std::string>& v) {
  std::uint32_t n = 0;
  if (!v) return 0;
  std::from_chars(v->data(), v->data() + v->size(), n);
  return n;
}

signal_protocol_address address_of(const std::string& peer, std::int32_t device) {
  return {peer.c_str(), peer.size(), device};
}

// libsignal's name of a sender key; points into `who`, which must outlive it.
signal_protocol_sender_key_name key_name_of(const group_sender& who) {
  return {who.group.c_str(), who.group.size(), address_of(who.sender, who.device)};
}

std::string serialized(const ciphertext_message* m) {
  const signal_buffer* b = ciphertext_message_get_serialized(m);
  return {reinterpret_cast<const char*>(signal_buffer_const_data(b)), signal_buffer_len(b)};
}

// What a signed prekey publishes: id, public key and signature.
public_prekey public_half(const session_signed_pre_key* spk) {
  public_prekey out;
  out.id = session_signed_pre_key_get_id(spk);
  out.public_key = serialize(ec_key_pair_get_public(session_signed_pre_key_get_key_pair(spk)));
  out.signature.assign(reinterpret_cast<const char*>(session_signed_pre_key_get_signature(spk)),
                       session_signed_pre_key_get_signature_len(spk));
  return out;
}

// What the store callbacks get as user data: the store, and whether it failed during the
// current operation (the library only passes return codes on, and SG_ERR_UNKNOWN is also what
// the crypto provider returns, so the flag is what tells a storage failure apart).
struct callback_context {
  key_store& store;
  bool failed = false;
};

key_store& store_of(void* user_data) { return static_cast<callback_context*>(user_data)->store; }

// Runs a store access inside a libsignal callback.
template <class Fn>
int guarded(void* user_data, Fn fn) {
  try {
    return fn();
  } catch (const std::exception&) {
    static_cast<callback_context*>(user_data)->failed = true;
    return SG_ERR_UNKNOWN;
  }
}

errc from_library(int code) {
  switch (code) {
    case SG_ERR_NO_SESSION:
      return errc::no_session;
    case SG_ERR_DUPLICATE_MESSAGE:
      return errc::duplicate_message;
    case SG_ERR_INVALID_KEY_ID:
      return errc::unknown_prekey;
    case SG_ERR_INVALID_MESSAGE:
    case SG_ERR_INVALID_MAC:
    case SG_ERR_INVALID_VERSION:
    case SG_ERR_LEGACY_MESSAGE:
    case SG_ERR_INVALID_PROTO_BUF:
    case SG_ERR_INVALID_KEY:
    case SG_ERR_STALE_KEY_EXCHANGE:
      return errc::invalid_message;
    default:
      return errc::library;
  }
}

// --- store callbacks -----------------------------------------------------------------------------

int load_session(signal_buffer** record, signal_buffer** user_record,
                 const signal_protocol_address* a, void* ud) {
  return guarded(ud, [&] {
    auto r = store_of(ud).session({a->name, a->name_len}, a->device_id);
    if (!r) return 0;
    *record = to_buffer(*r);
    return 1;
  });
}

int sub_device_sessions(signal_int_list** sessions, const char* name, size_t len, void* ud) {
  return guarded(ud, [&] {
    auto devices = store_of(ud).session_devices({name, len});
    *sessions = signal_int_list_alloc();
    for (auto d : devices) signal_int_list_push_back(*sessions, d);
    return static_cast<int>(devices.size());
  });
}

int store_session(const signal_protocol_address* a, uint8_t* record, size_t len, uint8_t*, size_t,
                  void* ud) {
  return guarded(ud, [&] {
    store_of(ud).put_session({a->name, a->name_len}, a->device_id,
                             {reinterpret_cast<const char*>(record), len});
    return 0;
  });
}

int contains_session(const signal_protocol_address* a, void* ud) {
  return guarded(ud, [&] {
    return store_of(ud).session({a->name, a->name_len}, a->device_id).has_value() ? 1 : 0;
  });
}

int delete_session(const signal_protocol_address* a, void* ud) {
  return guarded(ud, [&] {
    store_of(ud).remove_session({a->name, a->name_len}, a->device_id);
    return 1;
  });
}

int delete_all_sessions(const char* name, size_t len, void* ud) {
  return guarded(ud, [&] { return static_cast<int>(store_of(ud).remove_sessions({name, len})); });
}

int load_prekey(signal_buffer** record, uint32_t id, void* ud) {
  return guarded(ud, [&] {
    auto r = store_of(ud).prekey(id);
    if (!r) return SG_ERR_INVALID_KEY_ID;
    *record = to_buffer(*r);
    return SG_SUCCESS;
  });
}

int store_prekey(uint32_t id, uint8_t* record, size_t len, void* ud) {
  return guarded(ud, [&] {
    store_of(ud).put_prekey(id, {reinterpret_cast<const char*>(record), len});
    return 0;
  });
}

int contains_prekey(uint32_t id, void* ud) {
  return guarded(ud, [&] { return store_of(ud).prekey(id).has_value() ? 1 : 0; });
}

int remove_prekey(uint32_t id, void* ud) {
  return guarded(ud, [&] {
    store_of(ud).remove_prekey(id);
    return 0;
  });
}

int load_signed_prekey(signal_buffer** record, uint32_t id, void* ud) {
  return guarded(ud, [&] {
    auto r = store_of(ud).signed_prekey(id);
    if (!r) return SG_ERR_INVALID_KEY_ID;
    *record = to_buffer(*r);
    return SG_SUCCESS;
  });
}

int store_signed_prekey(uint32_t id, uint8_t* record, size_t len, void* ud) {
  return guarded(ud, [&] {
    store_of(ud).put_signed_prekey(id, {reinterpret_cast<const char*>(record), len}, 0);
    return 0;
  });
}

int contains_signed_prekey(uint32_t id, void* ud) {
  return guarded(ud, [&] { return store_of(ud).signed_prekey(id).has_value() ? 1 : 0; });
}

int remove_signed_prekey(uint32_t id, void* ud) {
  return guarded(ud, [&] {
    store_of(ud).remove_signed_prekey(id);
    return 0;
  });
}

int identity_key_pair(signal_buffer** public_data, signal_buffer** private_data, void* ud) {
  return guarded(ud, [&] {
    auto pub = store_of(ud).meta(meta_identity_public);
    auto priv = store_of(ud).meta(meta_identity_private);
    if (!pub || !priv) return SG_ERR_INVALID_KEY;
    *public_data = to_buffer(*pub);
    *private_data = to_buffer(*priv);
    return 0;
  });
}

int local_registration_id(void* ud, uint32_t* id) {
  return guarded(ud, [&] {
    *id = parse_u32(store_of(ud).meta(meta_registration_id));
    return *id == 0 ? SG_ERR_INVALID_KEY : 0;
  });
}

int save_identity(const signal_protocol_address* a, uint8_t* key, size_t len, void* ud) {
  return guarded(ud, [&] {
    if (key == nullptr) return 0;  // "forget the key": parley keeps it, for the change record
    store_of(ud).put_identity({a->name, a->name_len}, {reinterpret_cast<const char*>(key), len},
                              now_ms());
    return 0;
  });
}

std::string_view group_name(const signal_protocol_sender_key_name* n) {
  return {n->group_id, n->group_id_len};
}

std::string_view sender_name(const signal_protocol_sender_key_name* n) {
  return {n->sender.name, n->sender.name_len};
}

int store_sender_key(const signal_protocol_sender_key_name* n, uint8_t* record, size_t len,
                     uint8_t*, size_t, void* ud) {
  return guarded(ud, [&] {
    store_of(ud).put_sender_key(group_name(n), sender_name(n), n->sender.device_id,
                                {reinterpret_cast<const char*>(record), len});
    return 0;
  });
}

int load_sender_key(signal_buffer** record, signal_buffer**, const signal_protocol_sender_key_name* n,
                    void* ud) {
  return guarded(ud, [&] {
    auto r = store_of(ud).sender_key(group_name(n), sender_name(n), n->sender.device_id);
    if (!r) return 0;
    *record = to_buffer(*r);
    return 1;
  });
}

// Trust on first use, and a changed key is accepted but recorded (by save_identity, which the
// library calls right after with the new key), so the user is told instead of blocked.
int is_trusted_identity(const signal_protocol_address*, uint8_t*, size_t, void*) { return 1; }

}  // namespace

struct signal_engine::impl {
  library_context& library;
  key_store& store;
  callback_context callbacks;
  signal_protocol_store_context* context = nullptr;

  impl(library_context& l, key_store& s) : library(l), store(s), callbacks{s} {
    if (signal_protocol_store_context_create(&context, library.get()) != 0) {
      throw std::runtime_error("cannot create the Signal protocol store context");
    }
    signal_protocol_session_store sessions{};
    sessions.load_session_func = load_session;
    sessions.get_sub_device_sessions_func = sub_device_sessions;
    sessions.store_session_func = store_session;
    sessions.contains_session_func = contains_session;
    sessions.delete_session_func = delete_session;
    sessions.delete_all_sessions_func = delete_all_sessions;
    sessions.user_data = &callbacks;
    signal_protocol_pre_key_store prekeys{};
    prekeys.load_pre_key = load_prekey;
    prekeys.store_pre_key = store_prekey;
    prekeys.contains_pre_key = contains_prekey;
    prekeys.remove_pre_key = remove_prekey;
    prekeys.user_data = &callbacks;
    signal_protocol_signed_pre_key_store signed_prekeys{};
    signed_prekeys.load_signed_pre_key = load_signed_prekey;
    signed_prekeys.store_signed_pre_key = store_signed_prekey;
    signed_prekeys.contains_signed_pre_key = contains_signed_prekey;
    signed_prekeys.remove_signed_pre_key = remove_signed_prekey;
    signed_prekeys.user_data = &callbacks;
    signal_protocol_identity_key_store identities{};
    identities.get_identity_key_pair = identity_key_pair;
    identities.get_local_registration_id = local_registration_id;
    identities.save_identity = save_identity;
    identities.is_trusted_identity = is_trusted_identity;
    identities.user_data = &callbacks;
    signal_protocol_store_context_set_session_store(context, &sessions);
    signal_protocol_store_context_set_pre_key_store(context, &prekeys);
    signal_protocol_store_context_set_signed_pre_key_store(context, &signed_prekeys);
    signal_protocol_store_context_set_identity_key_store(context, &identities);
    signal_protocol_sender_key_store sender_keys{};
    sender_keys.store_sender_key = store_sender_key;
    sender_keys.load_sender_key = load_sender_key;
    sender_keys.user_data = &callbacks;
    signal_protocol_store_context_set_sender_key_store(context, &sender_keys);
  }
  ~impl() { signal_protocol_store_context_destroy(context); }

  result<ref<ratchet_identity_key_pair>> identity_pair() {
    ref<ratchet_identity_key_pair> pair;
    const int rc = signal_protocol_identity_get_key_pair(context, pair.out());
    if (rc != 0 || !pair) return errc::no_identity;
    return pair;
  }

  // Generates and stores a signed prekey; returns its public half.
  result<public_prekey> new_signed_prekey(std::uint64_t now_ms) {
    auto pair = identity_pair();
    if (!pair) return pair.error();
    std::uint32_t id = parse_u32(store.meta(meta_next_signed_prekey_id));
    if (id == 0) id = 1;
    ref<session_signed_pre_key> spk;
    if (signal_protocol_key_helper_generate_signed_pre_key(spk.out(), pair->get(), id, now_ms,
                                                           library.get()) != 0) {
      return errc::library;
    }
    buffer record;
    if (session_signed_pre_key_serialize(record.out(), spk.get()) != 0) return errc::library;
    store.put_signed_prekey(id, record.str(), now_ms);
    store.set_meta(meta_next_signed_prekey_id, std::to_string(id % max_prekey_id + 1));
    return public_half(spk.get());
  }

  // The public half of the newest stored signed prekey.
  result<public_prekey> current_signed_prekey() {
    auto all = store.signed_prekeys();
    if (all.empty()) return errc::no_identity;
    const std::uint32_t id = all.back().first;
    auto record = store.signed_prekey(id);
    if (!record) return errc::storage;
    ref<session_signed_pre_key> spk;
    if (session_signed_pre_key_deserialize(spk.out(), bytes(*record), record->size(),
                                           library.get()) != 0) {
      return errc::storage;
    }
    return public_half(spk.get());
  }

  result<std::vector<public_prekey>> new_one_time_prekeys(std::size_t count) {
    std::vector<public_prekey> out;
    if (count == 0) return out;
    std::uint32_t start = parse_u32(store.meta(meta_next_prekey_id));
    if (start == 0) start = 1;
    signal_protocol_key_helper_pre_key_list_node* head = nullptr;
    if (signal_protocol_key_helper_generate_pre_keys(&head, start, static_cast<unsigned>(count),
                                                     library.get()) != 0) {
      return errc::library;
    }
    result<std::vector<public_prekey>> r = out;
    try {
      for (auto* node = head; node; node = signal_protocol_key_helper_key_list_next(node)) {
        session_pre_key* k = signal_protocol_key_helper_key_list_element(node);
        buffer record;
        if (session_pre_key_serialize(record.out(), k) != 0) {
          r = errc::library;
          break;
        }
        store.put_prekey(session_pre_key_get_id(k), record.str());
        out.push_back({session_pre_key_get_id(k),
                       serialize(ec_key_pair_get_public(session_pre_key_get_key_pair(k))),
                       {}});
      }
    } catch (const std::exception&) {
      r = errc::storage;
    }
    signal_protocol_key_helper_key_list_free(head);
    if (!r) return r.error();
    store.set_meta(meta_next_prekey_id, std::to_string((start - 1 + count) % max_prekey_id + 1));
    return out;
  }

  // The sender key record of `who` (an empty record if there is none), as libsignal loads it.
  result<ref<sender_key_record>> sender_key_record_of(const signal_protocol_sender_key_name& who) {
    ref<sender_key_record> record;
    if (signal_protocol_sender_key_load_key(context, record.out(), &who) != 0 || !record) {
      return errc::storage;
    }
    return record;
  }

  // Whether `record` holds the state of key `key_id` (the state stays the record's).
  static bool holds_key(sender_key_record* record, std::uint32_t key_id) {
    sender_key_state* state = nullptr;
    return !sender_key_record_is_empty(record) &&
           sender_key_record_get_sender_key_state_by_id(record, &state, key_id) == 0 &&
           state != nullptr;
  }

  result<key_upload> base_upload() {
    auto pub = store.meta(meta_identity_public);
    const std::uint32_t registration = parse_u32(store.meta(meta_registration_id));
    if (!pub || registration == 0) return errc::no_identity;
    key_upload u;
    u.identity_key = *pub;
    u.registration_id = registration;
    return u;
  }
};

// Runs an engine operation, turning a failing store (thrown here, or caught in a callback)
// into errc::storage, whatever the library made of it.
template <class T, class Fn>
result<T> storage_guard(callback_context& callbacks, Fn fn) {
  callbacks.failed = false;
  try {
    result<T> r = fn();
    if (callbacks.failed) {
      callbacks.failed = false;
      return errc::storage;
    }
    return r;
  } catch (const std::exception&) {
    callbacks.failed = false;
    return errc::storage;
  }
}

signal_engine::signal_engine(library_context& library, key_store& store)
    : impl_(std::make_unique<impl>(library, store)) {}

signal_engine::~signal_engine() = default;

bool signal_engine::has_identity() { return impl_->store.meta(meta_identity_public).has_value(); }

result<bool> signal_engine::create_identity(std::uint64_t now_ms) {
  return storage_guard<bool>(impl_->callbacks, [&]() -> result<bool> {
    auto& d = *impl_;
    if (has_identity()) return false;
    ref<ratchet_identity_key_pair> pair;
    if (signal_protocol_key_helper_generate_identity_key_pair(pair.out(), d.library.get()) != 0) {
      return errc::library;
    }
    std::uint32_t registration = 0;
    // The extended range (up to 2^31) makes two installs of one device unlikely to collide,
    // which STALE_KEYS detection relies on.
    if (signal_protocol_key_helper_generate_registration_id(&registration, 1, d.library.get()) !=
            0 ||
        registration == 0) {
      return errc::library;
    }
    buffer priv;
    if (ec_private_key_serialize(priv.out(), ratchet_identity_key_pair_get_private(pair.get())) !=
        0) {
      return errc::library;
    }
    d.store.set_meta(meta_identity_public,
                     serialize(ratchet_identity_key_pair_get_public(pair.get())));
    d.store.set_meta(meta_identity_private, priv.str());
    d.store.set_meta(meta_registration_id, std::to_string(registration));
    auto spk = d.new_signed_prekey(now_ms);
    if (!spk) return result<bool>(boost::system::in_place_error, spk.error());
    return true;
  });
}

result<std::string> signal_engine::identity_key() {
  auto pub = impl_->store.meta(meta_identity_public);
  if (!pub) return errc::no_identity;
  return *pub;
}

result<std::uint32_t> signal_engine::registration_id() {
  const std::uint32_t id = parse_u32(impl_->store.meta(meta_registration_id));
  if (id == 0) return errc::no_identity;
  return id;
}

result<key_upload> signal_engine::full_upload(std::size_t one_time) {
  return storage_guard<key_upload>(impl_->callbacks, [&]() -> result<key_upload> {
    auto u = impl_->base_upload();
    if (!u) return u.error();
    auto spk = impl_->current_signed_prekey();
    if (!spk) return spk.error();
    u->signed_prekey = std::move(*spk);
    auto keys = impl_->new_one_time_prekeys(one_time);
    if (!keys) return keys.error();
    u->one_time_prekeys = std::move(*keys);
    return u;
  });
}

result<key_upload> signal_engine::top_up(std::size_t one_time) {
  return storage_guard<key_upload>(impl_->callbacks, [&]() -> result<key_upload> {
    auto u = impl_->base_upload();
    if (!u) return u.error();
    auto keys = impl_->new_one_time_prekeys(one_time);
    if (!keys) return keys.error();
    u->one_time_prekeys = std::move(*keys);
    return u;
  });
}

result<std::optional<key_upload>> signal_engine::rotate_signed_prekey(std::uint64_t now_ms,
                                                                      std::uint64_t max_age_ms,
                                                                      std::uint64_t keep_ms) {
  return storage_guard<std::optional<key_upload>>(
      impl_->callbacks, [&]() -> result<std::optional<key_upload>> {
        auto& d = *impl_;
        auto all = d.store.signed_prekeys();
        if (all.empty()) return errc::no_identity;
        std::optional<key_upload> out;
        if (all.back().second + max_age_ms <= now_ms) {
          auto u = d.base_upload();
          if (!u) return u.error();
          auto spk = d.new_signed_prekey(now_ms);
          if (!spk) return spk.error();
          u->signed_prekey = std::move(*spk);
          out = std::move(*u);
          all = d.store.signed_prekeys();
        }
        // A key is kept for keep_ms after its successor was made (not after it was made itself):
        // a device back after a long absence rotates first and then drains messages that were
        // built on the key it just replaced.
        for (std::size_t i = 0; i + 1 < all.size(); ++i) {
          if (all[i + 1].second + keep_ms <= now_ms) d.store.remove_signed_prekey(all[i].first);
        }
        return out;
      });
}

result<void> signal_engine::process_bundle(const peer_bundle& b) {
  return storage_guard<void>(impl_->callbacks, [&]() -> result<void> {
    auto& d = *impl_;
    ref<ec_public_key> identity, signed_key, one_time;
    if (curve_decode_point(identity.out(), bytes(b.identity_key), b.identity_key.size(),
                           d.library.get()) != 0 ||
        curve_decode_point(signed_key.out(), bytes(b.signed_prekey.public_key),
                           b.signed_prekey.public_key.size(), d.library.get()) != 0) {
      return errc::invalid_bundle;
    }
    if (b.one_time_prekey &&
        curve_decode_point(one_time.out(), bytes(b.one_time_prekey->public_key),
                           b.one_time_prekey->public_key.size(), d.library.get()) != 0) {
      return errc::invalid_bundle;
    }
    ref<session_pre_key_bundle> bundle;
    if (session_pre_key_bundle_create(bundle.out(), b.registration_id, b.device,
                                      b.one_time_prekey ? b.one_time_prekey->id : 0, one_time.get(),
                                      b.signed_prekey.id, signed_key.get(),
                                      bytes(b.signed_prekey.signature),
                                      b.signed_prekey.signature.size(), identity.get()) != 0) {
      return errc::invalid_bundle;
    }
    const auto address = address_of(b.username, b.device);
    session_builder* builder = nullptr;
    if (session_builder_create(&builder, d.context, &address, d.library.get()) != 0) {
      return errc::library;
    }
    const int rc = session_builder_process_pre_key_bundle(builder, bundle.get());
    session_builder_free(builder);
    if (rc == SG_ERR_INVALID_KEY) return errc::invalid_bundle;  // the signature check
    if (rc != 0) return from_library(rc);
    return {};
  });
}

bool signal_engine::has_session(const std::string& peer, std::int32_t device) {
  const auto address = address_of(peer, device);
  return signal_protocol_session_contains_session(impl_->context, &address) == 1;
}

result<std::uint32_t> signal_engine::remote_registration_id(const std::string& peer,
                                                            std::int32_t device) {
  return storage_guard<std::uint32_t>(impl_->callbacks, [&]() -> result<std::uint32_t> {
    if (!has_session(peer, device)) return errc::no_session;
    const auto address = address_of(peer, device);
    session_cipher* cipher = nullptr;
    if (session_cipher_create(&cipher, impl_->context, &address, impl_->library.get()) != 0) {
      return errc::library;
    }
    std::uint32_t id = 0;
    const int rc = session_cipher_get_remote_registration_id(cipher, &id);
    session_cipher_free(cipher);
    if (rc != 0) return from_library(rc);
    return id;
  });
}

result<ciphertext> signal_engine::encrypt(const std::string& peer, std::int32_t device,
                                          const std::string& plaintext) {
  return storage_guard<ciphertext>(impl_->callbacks, [&]() -> result<ciphertext> {
    if (!has_session(peer, device)) return errc::no_session;
    const auto address = address_of(peer, device);
    session_cipher* cipher = nullptr;
    if (session_cipher_create(&cipher, impl_->context, &address, impl_->library.get()) != 0) {
      return errc::library;
    }
    ref<ciphertext_message> message;
    const int rc =
        session_cipher_encrypt(cipher, bytes(plaintext), plaintext.size(), message.out());
    session_cipher_free(cipher);
    if (rc != 0) return from_library(rc);
    signal_buffer* serialized = ciphertext_message_get_serialized(message.get());
    ciphertext out;
    out.type = ciphertext_message_get_type(message.get()) == CIPHERTEXT_PREKEY_TYPE
                   ? message_type::prekey
                   : message_type::signal;
    out.bytes.assign(reinterpret_cast<const char*>(signal_buffer_const_data(serialized)),
                     signal_buffer_len(serialized));
    return out;
  });
}

result<std::string> signal_engine::decrypt(const std::string& peer, std::int32_t device,
                                           message_type type, const std::string& data) {
  return storage_guard<std::string>(impl_->callbacks, [&]() -> result<std::string> {
    auto& d = *impl_;
    const auto address = address_of(peer, device);
    session_cipher* cipher = nullptr;
    if (session_cipher_create(&cipher, d.context, &address, d.library.get()) != 0) {
      return errc::library;
    }
    buffer plain;
    int rc = 0;
    if (type == message_type::prekey) {
      ref<pre_key_signal_message> message;
      rc = pre_key_signal_message_deserialize(message.out(), bytes(data), data.size(),
                                              d.library.get());
      if (rc == 0)
        rc = session_cipher_decrypt_pre_key_signal_message(cipher, message.get(), nullptr,
                                                           plain.out());
    } else {
      ref<signal_message> message;
      rc = signal_message_deserialize(message.out(), bytes(data), data.size(), d.library.get());
      if (rc == 0)
        rc = session_cipher_decrypt_signal_message(cipher, message.get(), nullptr, plain.out());
    }
    session_cipher_free(cipher);
    if (rc != 0) return from_library(rc);
    return plain.str();
  });
}

// --- groups ------------------------------------------------------------------------------------

result<sender_key_distribution> signal_engine::own_sender_key(const group_sender& self) {
  return storage_guard<sender_key_distribution>(
      impl_->callbacks, [&]() -> result<sender_key_distribution> {
        auto& d = *impl_;
        const auto name = key_name_of(self);
        group_session_builder* builder = nullptr;
        if (group_session_builder_create(&builder, d.context, d.library.get()) != 0) {
          return errc::library;
        }
        // Creates the key (random id, chain key and signing key pair) if the record is empty,
        // then describes it at the chain's current step.
        ref<sender_key_distribution_message> message;
        const int rc = group_session_builder_create_session(builder, message.out(), &name);
        group_session_builder_free(builder);
        if (rc != 0 || !message) return from_library(rc);
        return sender_key_distribution{
            sender_key_distribution_message_get_id(message.get()),
            serialized(reinterpret_cast<const ciphertext_message*>(message.get()))};
      });
}

result<std::optional<std::uint32_t>> signal_engine::own_sender_key_id(const group_sender& self) {
  return storage_guard<std::optional<std::uint32_t>>(
      impl_->callbacks, [&]() -> result<std::optional<std::uint32_t>> {
        const auto name = key_name_of(self);
        auto record = impl_->sender_key_record_of(name);
        if (!record) return record.error();
        if (sender_key_record_is_empty(record->get())) return std::optional<std::uint32_t>{};
        sender_key_state* state = nullptr;  // the newest: the one encrypt uses
        if (sender_key_record_get_sender_key_state(record->get(), &state) != 0 || !state) {
          return errc::storage;
        }
        return std::optional<std::uint32_t>(sender_key_state_get_key_id(state));
      });
}

result<void> signal_engine::process_sender_key(const group_sender& from,
                                               const std::string& distribution) {
  return storage_guard<void>(impl_->callbacks, [&]() -> result<void> {
    auto& d = *impl_;
    ref<sender_key_distribution_message> message;
    if (sender_key_distribution_message_deserialize(message.out(), bytes(distribution),
                                                    distribution.size(), d.library.get()) != 0) {
      return errc::invalid_message;
    }
    const auto name = key_name_of(from);
    auto record = d.sender_key_record_of(name);
    if (!record) return record.error();
    if (impl::holds_key(record->get(), sender_key_distribution_message_get_id(message.get()))) {
      return {};  // held already, maybe further along its chain: keep that
    }
    group_session_builder* builder = nullptr;
    if (group_session_builder_create(&builder, d.context, d.library.get()) != 0) {
      return errc::library;
    }
    const int rc = group_session_builder_process_session(builder, &name, message.get());
    group_session_builder_free(builder);
    if (rc != 0) return from_library(rc);
    return {};
  });
}

bool signal_engine::has_sender_key_for(const group_sender& from, const std::string& data) {
  auto held = storage_guard<bool>(impl_->callbacks, [&]() -> result<bool> {
    auto& d = *impl_;
    ref<sender_key_message> message;
    if (sender_key_message_deserialize(message.out(), bytes(data), data.size(), d.library.get()) !=
        0) {
      return false;
    }
    const auto name = key_name_of(from);
    auto record = d.sender_key_record_of(name);
    if (!record) return result<bool>(boost::system::in_place_error, record.error());
    return impl::holds_key(record->get(), sender_key_message_get_key_id(message.get()));
  });
  return held && *held;
}

result<ciphertext> signal_engine::group_encrypt(const group_sender& self,
                                                const std::string& plaintext) {
  return storage_guard<ciphertext>(impl_->callbacks, [&]() -> result<ciphertext> {
    auto& d = *impl_;
    const auto name = key_name_of(self);
    {
      auto record = d.sender_key_record_of(name);
      if (!record) return record.error();
      if (sender_key_record_is_empty(record->get())) return errc::no_sender_key;
    }
    group_cipher* cipher = nullptr;
    if (group_cipher_create(&cipher, d.context, &name, d.library.get()) != 0) {
      return errc::library;
    }
    ref<ciphertext_message> message;
    const int rc = group_cipher_encrypt(cipher, bytes(plaintext), plaintext.size(), message.out());
    group_cipher_free(cipher);
    if (rc == SG_ERR_NO_SESSION) return errc::no_sender_key;  // a key received, not our own
    if (rc != 0 || !message) return from_library(rc);
    return ciphertext{message_type::sender_key, serialized(message.get())};
  });
}

result<std::string> signal_engine::group_decrypt(const group_sender& from,
                                                 const std::string& data) {
  return storage_guard<std::string>(impl_->callbacks, [&]() -> result<std::string> {
    auto& d = *impl_;
    ref<sender_key_message> message;
    if (sender_key_message_deserialize(message.out(), bytes(data), data.size(), d.library.get()) !=
        0) {
      return errc::invalid_message;
    }
    const auto name = key_name_of(from);
    {
      // The library reports an unknown key id as an invalid message: told apart here, since
      // a message whose key is still on its way is kept for later, not dropped.
      auto record = d.sender_key_record_of(name);
      if (!record) return record.error();
      if (!impl::holds_key(record->get(), sender_key_message_get_key_id(message.get()))) {
        return errc::no_sender_key;
      }
    }
    group_cipher* cipher = nullptr;
    if (group_cipher_create(&cipher, d.context, &name, d.library.get()) != 0) {
      return errc::library;
    }
    buffer plain;
    const int rc = group_cipher_decrypt(cipher, message.get(), nullptr, plain.out());
    group_cipher_free(cipher);
    if (rc == SG_ERR_NO_SESSION) return errc::no_sender_key;
    if (rc != 0) return from_library(rc);
    return plain.str();
  });
}

result<void> signal_engine::forget_sender_key(const group_sender& whose) {
  return storage_guard<void>(impl_->callbacks, [&]() -> result<void> {
    impl_->store.remove_sender_key(whose.group, whose.sender, whose.device);
    return {};
  });
}

result<std::size_t> signal_engine::forget_group(const std::string& group) {
  return storage_guard<std::size_t>(impl_->callbacks, [&]() -> result<std::size_t> {
    return impl_->store.remove_sender_keys(group);
  });
}

result<std::string> signal_engine::safety_number(const std::string& me, const std::string& peer) {
  return storage_guard<std::string>(impl_->callbacks, [&]() -> result<std::string> {
    auto& d = *impl_;
    auto mine = d.store.meta(meta_identity_public);
    if (!mine) return errc::no_identity;
    auto theirs = d.store.identity(peer);
    if (!theirs) return errc::unknown_identity;
    ref<ec_public_key> local, remote;
    if (curve_decode_point(local.out(), bytes(*mine), mine->size(), d.library.get()) != 0 ||
        curve_decode_point(remote.out(), bytes(*theirs), theirs->size(), d.library.get()) != 0) {
      return errc::storage;
    }
    fingerprint_generator* generator = nullptr;
    if (fingerprint_generator_create(&generator, fingerprint_iterations,
                                     scannable_fingerprint_version, d.library.get()) != 0) {
      return errc::library;
    }
    ref<fingerprint> fp;
    const int rc = fingerprint_generator_create_for(generator, me.c_str(), local.get(),
                                                    peer.c_str(), remote.get(), fp.out());
    fingerprint_generator_free(generator);
    if (rc != 0) return errc::library;
    return std::string(displayable_fingerprint_text(fingerprint_get_displayable(fp.get())));
  });
}

}  // namespace parley::e2ee
