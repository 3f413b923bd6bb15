// A self-signed certificate for localhost and 127.0.0.1 (EC P-256, valid 2 days), made with the
// openssl command as an operator would make one for a test set-up: for the TLS tests of
// parleyd and of the blob transfers.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace parley::test_support {

// Writes the certificate (PEM) to `cert` and its key to `key`, subject CN=`name`. False if
// openssl failed.
inline bool make_certificate(const std::filesystem::path& cert, const std::filesystem::path& key,
                             const std::string& name) {
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
      " -subj /CN=" +
      name + " -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout '" + key.string() +
      "' -out '" + cert.string() + "' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

}  // namespace parley::test_support
