// The presigned URLs of the local blob store: how local_blob_store signs them and how
// blob_http_server checks them. The URL format is part of the protocol (docs/protocol.md,
// "Media"); <base> is the store's public URL (local_blob_store), not signed:
//
//   upload:   <base>/v1/blobs/<id>?op=put&owner=<u64>&size=<u64>&sha256=<hex>
//                                   &expires=<u64>&sig=<hex>      (one line)
//   download: <base>/v1/blobs/<id>?op=get&user=<u64>&expires=<u64>&sig=<hex>
//
// `expires` is in Unix seconds; the URL is valid up to and including that second. `sig` is the
// lowercase hex HMAC-SHA256, under the store's 32-byte URL key, of
//   "PUT\n" id "\n" owner "\n" size "\n" sha256 "\n" expires     (upload)
//   "GET\n" id "\n" user "\n" expires                            (download)
// with every number in canonical decimal (no sign, no leading zero). The id sits under the
// signature, so a URL cannot be moved to another blob; the operation sits under it too, so a
// download URL cannot be used to upload.
//
// Checking is strict: a number that is not canonical decimal, a field given twice, a missing
// field, an id or hash that is not lowercase hex of the right length is `malformed`. Query
// fields other than the ones above are ignored (they are not signed and change nothing). The
// signature is compared in constant time, and checked before the expiry, so that "expired" is
// only ever said of a URL this store signed.
//
// Thread safety: immutable after construction; every member may be called from any thread.
// Errors are values (url_refusal); nothing here throws but std::bad_alloc.
#pragma once

#include <array>
#include <boost/assert/source_location.hpp>
#include <boost/system/result.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "media/blob_store.hpp"

namespace parley::media {

// Why a presigned URL was refused.
enum class url_refusal {
  malformed = 1,    // not a URL of this form at all (HTTP 400)
  wrong_operation,  // a download URL used to upload, or the reverse (HTTP 403)
  bad_signature,    // changed after signing, or signed with another key (HTTP 403)
  expired,          // signed by this store, but its time is past (HTTP 403)
};

// The short text the HTTP server answers with: "malformed URL", "wrong operation",
// "bad signature", "expired".
[[nodiscard]] std::string_view to_text(url_refusal r) noexcept;

// Lets verified<T>::value() throw (std::runtime_error with to_text()); prefer has_value().
[[noreturn]] void throw_exception_from_error(url_refusal r, const boost::source_location& loc);

template <class T>
using verified = boost::system::result<T, url_refusal>;

// What a download URL allows: `user` may GET blob `id` until `expires`.
struct download_grant {
  blob_id id;
  std::uint64_t user = 0;
  wall_clock::time_point expires;
};

// The parts of a request target that name a blob: "/v1/blobs/<id>?<query>" with a valid id.
struct blob_target {
  std::string_view id;
  std::string_view query;  // after the '?'; empty if there is none
};

// Splits `target` (as received in the request line); nullopt if it is not /v1/blobs/ followed
// by a valid blob id (and optionally a query): such a target names nothing here (HTTP 404).
[[nodiscard]] std::optional<blob_target> split_blob_target(std::string_view target) noexcept;

class blob_url_signer {
 public:
  static constexpr std::size_t key_bytes = 32;
  using url_key = std::array<unsigned char, key_bytes>;

  // The key is copied; the copy is wiped when the signer goes.
  explicit blob_url_signer(const url_key& key);
  ~blob_url_signer();
  blob_url_signer(const blob_url_signer&) = delete;
  blob_url_signer& operator=(const blob_url_signer&) = delete;

  // The URLs of blob_store without their base: "/v1/blobs/<id>?op=...&sig=<hex>", to be put
  // after the store's public base URL. A grant whose id or hash is not valid (the caller's bug)
  // gives a URL that every check refuses as malformed; it is logged as an error.
  [[nodiscard]] std::string upload_target(const upload_grant& grant) const;
  [[nodiscard]] std::string download_target(const blob_id& id, std::uint64_t user,
                                            wall_clock::time_point expires) const;

  // Checks an upload URL as received: `id` and `query` from split_blob_target(), `now` the
  // current time. The grant it was signed for, or why not.
  [[nodiscard]] verified<upload_grant> verify_upload(std::string_view id, std::string_view query,
                                                     wall_clock::time_point now) const;
  // The same for a download URL.
  [[nodiscard]] verified<download_grant> verify_download(std::string_view id,
                                                         std::string_view query,
                                                         wall_clock::time_point now) const;

 private:
  // Lowercase hex HMAC-SHA256 of `message` under the key (64 characters).
  [[nodiscard]] std::string mac_hex(std::string_view message) const;
  // True if `sig` is the MAC of `message` (constant time in the signature's bytes).
  [[nodiscard]] bool signature_matches(std::string_view message, std::string_view sig) const;

  url_key key_;
};

}  // namespace parley::media
