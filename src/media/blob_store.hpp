// Where media ciphertext lives. Clients upload and download it themselves, through presigned
// URLs; parleyd only decides who may, and signs. Two implementations:
//   local/local_blob_store — files under --data, served by parleyd's own blob HTTP server
//                            (media/local/blob_http_server), HMAC-signed URLs;
//   s3/s3_blob_store       — any S3-compatible object store, AWS Signature V4 presigned URLs.
//
// Thread safety: every member may be called from any thread. upload_url and download_url only
// compute (no I/O); remove and written_before do blocking I/O: call them off the I/O threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace parley::media {

// A blob's name: 32 lowercase hex digits (128 random bits), always made by the server
// (new_blob_id), so that no path or object key is ever built from a client's bytes.
using blob_id = std::string;
[[nodiscard]] bool valid_blob_id(std::string_view id) noexcept;
[[nodiscard]] blob_id new_blob_id();

// 64 lowercase hex digits.
[[nodiscard]] bool valid_sha256_hex(std::string_view hex) noexcept;
// Lowercase hex of any bytes.
[[nodiscard]] std::string to_hex(std::string_view bytes);

using wall_clock = std::chrono::system_clock;

// Milliseconds since the Unix epoch (UploadSlot.expires_at_ms).
[[nodiscard]] inline std::uint64_t unix_ms(wall_clock::time_point t) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count());
}

// What an upload URL allows: exactly `size` bytes whose SHA-256 is `sha256_hex`, stored as
// `id`, by the account `owner`, until `expires`.
struct upload_grant {
  blob_id id;
  std::uint64_t owner = 0;
  std::uint64_t size = 0;
  std::string sha256_hex;
  wall_clock::time_point expires;
};

// An S3 multipart upload's URLs (s3_blob_store): part N (from 1) is bytes
// [(N-1) * part_size, min(N * part_size, size)) of the blob, PUT to parts[N-1] with exactly that
// length; `complete` takes the POST that assembles them.
struct multipart_urls {
  std::uint64_t part_size = 0;
  std::vector<std::string> parts;
  std::string complete;
};

class blob_store {
 public:
  virtual ~blob_store() = default;

  // The URL the client PUTs the ciphertext to (resuming with HEAD + Content-Range where the
  // store supports it: docs/protocol.md, "Media").
  [[nodiscard]] virtual std::string upload_url(const upload_grant& grant) = 0;
  // A store with multipart uploads (S3): the URL to POST to start one for grant.id when the
  // blob takes more than one part; empty otherwise (and always for a store without them: the
  // upload goes to upload_url).
  [[nodiscard]] virtual std::string multipart_start_url(const upload_grant& grant) = 0;
  // The part and completion URLs of the multipart upload `upload_id` of grant.id (grant.size
  // bytes in all), valid until grant.expires; nullopt for a store without multipart uploads.
  // `upload_id` must already be checked (wire: is_upload_id); it is only signed into URLs.
  [[nodiscard]] virtual std::optional<multipart_urls> multipart_part_urls(
      const upload_grant& grant, std::string_view upload_id) = 0;
  // The URL `user` GETs blob `id` from (HTTP Range supported), valid until `expires`.
  [[nodiscard]] virtual std::string download_url(const blob_id& id, std::uint64_t user,
                                                 wall_clock::time_point expires) = 0;
  // Deletes the blob and any partial upload of it: for a store with multipart uploads, the
  // upload `upload_id` (the one bound to the blob's record; empty: none) is aborted first, so
  // that its parts go too (an abort that fails is logged, and the blob deleted all the same).
  // A blob or upload that is not there is not an error. False when the store could not be
  // reached or the blob's delete failed (try again later).
  virtual bool remove(const blob_id& id, std::string_view upload_id) = 0;
  // Blobs, complete or partial, last written before `before`: the orphan sweep's candidates.
  // A store that cannot list (or chooses not to) returns none.
  [[nodiscard]] virtual std::vector<blob_id> written_before(wall_clock::time_point before) = 0;
};

}  // namespace parley::media
