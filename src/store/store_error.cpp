#include "store/store_error.hpp"

#include <string>

namespace parley::store {
namespace {

class category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "parley.store"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::username_taken:
        return "username taken";
      case errc::unknown_user:
        return "unknown user";
      case errc::not_found:
        return "not found";
      case errc::io_error:
        return "storage I/O error";
      case errc::corrupt:
        return "stored value corrupt";
      case errc::shutting_down:
        return "store shutting down";
      case errc::stale_keys:
        return "the recipient's keys have changed: fetch them again";
      case errc::no_keys:
        return "the user has not uploaded keys";
      case errc::missing_signed_prekey:
        return "a first upload or a new identity key needs a signed prekey";
      case errc::too_many_prekeys:
        return "too many one-time prekeys held";
      case errc::self_message:
        return "messages to yourself are not supported";
      case errc::busy:
        return "storage busy: too many writes waiting, or a lock or statement timed out; retry "
               "shortly";
      case errc::invalid_argument:
        return "invalid argument";
      case errc::unavailable:
        return "storage unavailable: writes are refused for now, retry later";
      case errc::not_admin:
        return "only the group's admins may do that";
      case errc::group_full:
        return "the group has the most members allowed";
      case errc::not_member:
        return "that user is not a member of the group";
      case errc::already_member:
        return "that user is a member of the group already";
      case errc::quota_exceeded:
        return "the account's media storage quota would be exceeded";
      case errc::media_not_found:
        return "no such media, or not this account's";
    }
    return "unknown store error";
  }
};

}  // namespace

const boost::system::error_category& store_category() noexcept {
  static const category_impl instance;
  return instance;
}

}  // namespace parley::store
