// libsignal-protocol-c's global context, with its crypto provider on OpenSSL 3 (random bytes,
// HMAC-SHA256, SHA-512, AES-CBC/PKCS#5 and AES-CTR) and recursive locking.
//
// libsignal-protocol-c is archived upstream: everything of it that parley uses goes through
// this module (library_context, signal_engine, key_check), so that replacing it touches only
// src/e2ee.
#pragma once

#include <memory>

struct signal_context;

namespace parley::e2ee {

class library_context {
 public:
  library_context();  // throws std::runtime_error if the library or OpenSSL cannot start
  ~library_context();
  library_context(const library_context&) = delete;
  library_context& operator=(const library_context&) = delete;

  ::signal_context* get() const { return context_; }

  struct provider_state;

 private:
  std::unique_ptr<provider_state> state_;
  ::signal_context* context_ = nullptr;
};

}  // namespace parley::e2ee
