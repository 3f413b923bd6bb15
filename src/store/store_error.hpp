// Errors of the Store interface, as a Boost.System error category.
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace parley::store {

enum class errc {
  username_taken = 1,
  unknown_user,
  not_found,
  io_error,       // the backend failed to read or write; nothing of the request was applied
  corrupt,        // a stored value could not be decoded
  shutting_down,  // the store was stopped
  stale_keys,     // send: the recipient's registration id is not the one given
  no_keys,        // the user has never uploaded keys
  missing_signed_prekey,
  too_many_prekeys,
  // The store refuses writes for now (the disk is full, or a write failed and the store has
  // not recovered yet); nothing of the request was applied. Reads still work. Retry later:
  // the store resumes by itself once the cause is gone.
  unavailable,
  self_message,  // send: the recipient is the sender
  // The writer's queue is full (more requests waiting than rocksdb_options::max_pending):
  // nothing of the request was applied; retry shortly.
  busy,
  // A value breaks a rule only the store can check (an ack above the chat's last seq);
  // nothing of the request was applied.
  invalid_argument,
  // Groups: a change only admins may make; a group that would exceed its member limit; a
  // change about a user who is not (or already is) a member.
  not_admin,
  group_full,
  not_member,
  already_member,
  // Media: an upload slot that would take the account past its storage quota; a send naming
  // a blob that does not exist (or was swept) or is not the sender's.
  quota_exceeded,
  media_not_found,
};

const boost::system::error_category& store_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), store_category()};
}

template <class T>
using result = boost::system::result<T>;

}  // namespace parley::store

template <>
struct boost::system::is_error_code_enum<parley::store::errc> : std::true_type {};
