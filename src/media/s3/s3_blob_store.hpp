// blob_store on an S3-compatible object store (MinIO, Ceph RGW, Garage, AWS S3): parleyd only
// presigns (AWS Signature V4, query-string auth, path-style URLs) and clients move the bytes
// to and from the object store directly, so media never pass through a message node.
//
//   upload URL:   PUT  <endpoint>/<bucket>/<id>  signed headers: host, content-length (the
//                 declared size: the store refuses another length); expires as granted
//   multipart, for a blob of more than one part (part_bytes, 8 MiB):
//     start:      POST <endpoint>/<bucket>/<id>?uploads            (answers the UploadId)
//     part N:     PUT  <endpoint>/<bucket>/<id>?partNumber=N&uploadId=U  signed content-length:
//                 the part's exact length (the last part: what is left)
//     complete:   POST <endpoint>/<bucket>/<id>?uploadId=U         (the parts' ETags, as XML)
//   download URL: GET  <endpoint>/<bucket>/<id>  (Range supported by every S3 store)
//   remove:       DELETE <endpoint>/<bucket>/<id>?uploadId=U (AbortMultipartUpload, when an
//                 upload is bound to the record), then DELETE <endpoint>/<bucket>/<id>; header
//                 auth, from the sweeper's thread (10 s deadline each)
//
// What the local store does and this one does not: the SHA-256 is not checked by the object
// store (the recipient's client checks it, and the chunk tags, before it decrypts anything);
// a single-PUT upload that is cut starts over (a multipart one keeps its parts); remove()
// aborts only the multipart upload bound to the record (Store::bind_upload): one started from
// the slot's start URL that never asked for part URLs holds no part (parts are signed only
// for the bound upload), and is left to the bucket's AbortIncompleteMultipartUpload lifecycle
// rule (S3 lists uploads only to a bucket-wide call); written_before() lists nothing (the same
// rules remove what the sweeper cannot see).
//
// Thread safety: immutable after construction; remove() blocks (network I/O).
#pragma once

#include <string>

#include "media/blob_store.hpp"
#include "media/s3/sigv4.hpp"

namespace parley::media {

struct s3_options {
  std::string endpoint;  // "http(s)://HOST[:PORT]"
  std::string bucket;
  s3::credentials credentials;
  // https:// endpoints: the PEM certificates parleyd's own requests (the sweep's DELETEs)
  // trust, instead of the system's store (common/tls_client). Clients are told nothing of it.
  std::string ca_file;
};

class s3_blob_store final : public blob_store {
 public:
  // A multipart upload's part size: S3's smallest but the last is 5 MiB, and it allows 10,000
  // parts; 8 MiB makes the largest file (100,024,416 bytes) 12 parts.
  static constexpr std::uint64_t part_bytes = 8 * 1024 * 1024;

  // Throws std::invalid_argument for an endpoint that is not http(s)://HOST[:PORT] or an
  // empty bucket or key.
  explicit s3_blob_store(s3_options options);

  [[nodiscard]] std::string upload_url(const upload_grant& grant) override;
  [[nodiscard]] std::string multipart_start_url(const upload_grant& grant) override;
  [[nodiscard]] std::optional<multipart_urls> multipart_part_urls(
      const upload_grant& grant, std::string_view upload_id) override;
  [[nodiscard]] std::string download_url(const blob_id& id, std::uint64_t user,
                                         wall_clock::time_point expires) override;
  bool remove(const blob_id& id, std::string_view upload_id) override;
  [[nodiscard]] std::vector<blob_id> written_before(wall_clock::time_point before) override;

 private:
  // One DELETE of the object (`query` empty) or of its upload (`query` {uploadId}); true
  // when it answered 200, 204 or 404.
  bool send_delete(const blob_id& id, s3::name_values query) const;
  std::string presigned(const std::string& method, const blob_id& id, s3::name_values query,
                        s3::name_values headers, wall_clock::time_point expires) const;

  s3_options options_;
  std::string scheme_;  // "http" or "https"
  std::string host_;    // HOST[:PORT], as sent in the Host header
  std::string port_;    // for connecting
  std::string name_;    // HOST alone (an IPv6 literal without its brackets)
};

}  // namespace parley::media
