// blob_store on the local disk, served by parleyd's own blob HTTP server
// (media/local/blob_http_server) at its public URL, with URLs signed by blob_url_signer.
//
// Layout under `root` (created 0700 if missing; every directory below is 0700, every file 0600):
//   url.key                         the 32-byte HMAC key of the URLs, made from RAND_bytes on
//                                   the first start and read on every later one
//   blobs/<first 2 hex of id>/<id>        a complete blob (its size and SHA-256 were checked)
//   blobs/<first 2 hex of id>/<id>.part   an upload in progress, or cut and waiting to resume
// Paths are only ever built from an id that passed valid_blob_id(), never from other bytes.
//
// Thread safety: every member may be called from any thread (the public URL is the one mutable
// part, under a mutex; the file system arbitrates the rest). remove() and written_before() do
// blocking I/O. Errors: the constructors and set_public_url() throw (start-up code); the rest
// returns values.
#pragma once

#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "media/blob_store.hpp"
#include "media/local/blob_url_signer.hpp"

namespace parley::media {

class local_blob_store final : public blob_store {
 public:
  static constexpr std::string_view partial_suffix = ".part";

  // Opens (or creates) the store at `root`; `public_url` is what clients put before /v1/blobs/
  // (e.g. "http://127.0.0.1:8081": the blob server's public address), as set_public_url()
  // takes it. Throws std::runtime_error (or std::system_error) if `root` cannot be created, if
  // url.key cannot be read or written, if it does not hold exactly 32 bytes (a damaged key is
  // never replaced silently: that would invalidate every URL handed out), or if `public_url`
  // is not an http(s) URL.
  local_blob_store(std::filesystem::path root, std::string public_url);
  // The same without a public URL yet: for a server that binds port 0 and learns its address
  // afterwards. Until set_public_url(), URLs are relative ("/v1/blobs/...").
  explicit local_blob_store(std::filesystem::path root);

  // http://HOST[:PORT] or https://... (a trailing '/' is dropped); throws std::runtime_error
  // on anything else. URLs signed from now on start with it; earlier ones stay valid (the base
  // is not signed).
  void set_public_url(std::string public_url);

  [[nodiscard]] std::string upload_url(const upload_grant& grant) override;
  // None: an upload here is one PUT, resumed with HEAD and Content-Range.
  [[nodiscard]] std::string multipart_start_url(const upload_grant& grant) override;
  [[nodiscard]] std::optional<multipart_urls> multipart_part_urls(
      const upload_grant& grant, std::string_view upload_id) override;
  [[nodiscard]] std::string download_url(const blob_id& id, std::uint64_t user,
                                         wall_clock::time_point expires) override;
  // Unlinks <id> and <id>.part. An upload still running on the blob server keeps writing to
  // the unlinked file and fails at its end (it can no longer be renamed into place).
  bool remove(const blob_id& id, std::string_view upload_id) override;
  // Ids of the files under blobs/ with a valid name (<id> or <id>.part, in the directory its id
  // belongs in) whose mtime is before `before`; each id once. Anything else there is ignored.
  // Directories that cannot be read are skipped (and logged).
  [[nodiscard]] std::vector<blob_id> written_before(wall_clock::time_point before) override;

  // --- for blob_http_server ---------------------------------------------------------------

  // Where the files of one blob live.
  struct blob_files {
    std::filesystem::path dir;       // blobs/<first 2 hex>
    std::filesystem::path complete;  // dir/<id>
    std::filesystem::path partial;   // dir/<id>.part
  };
  // nullopt unless valid_blob_id(id).
  [[nodiscard]] std::optional<blob_files> files_of(std::string_view id) const;

  const blob_url_signer& signer() const { return signer_; }
  const std::filesystem::path& root() const { return root_; }

 private:
  std::filesystem::path root_;
  std::filesystem::path blobs_;
  blob_url_signer signer_;
  mutable std::mutex public_url_mutex_;
  std::string public_url_;  // under public_url_mutex_
};

}  // namespace parley::media
