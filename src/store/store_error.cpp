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
