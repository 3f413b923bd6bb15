#include "e2ee/e2ee_error.hpp"

#include <string>

namespace parley::e2ee {
namespace {

class category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "parley.e2ee"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::no_identity:
        return "this device has no identity key yet";
      case errc::no_session:
        return "no session with that device";
      case errc::invalid_message:
        return "not a valid Signal message (corrupt, forged or not for this device)";
      case errc::duplicate_message:
        return "message already decrypted";
      case errc::unknown_prekey:
        return "the message uses a prekey this device no longer has";
      case errc::invalid_bundle:
        return "the key bundle does not verify";
      case errc::unknown_identity:
        return "no identity key known for that user";
      case errc::malformed_content:
        return "the decrypted message is malformed";
      case errc::storage:
        return "the local key store failed";
      case errc::library:
        return "the Signal protocol library failed";
      case errc::no_sender_key:
        return "no sender key of that member for this group (not received yet, or replaced)";
    }
    return "unknown e2ee error";
  }
};

}  // namespace

const boost::system::error_category& e2ee_category() noexcept {
  static const category_impl instance;
  return instance;
}

}  // namespace parley::e2ee
