// AWS Signature Version 4 (AWS4-HMAC-SHA256), as S3 and the S3-compatible stores (MinIO, Ceph
// RGW, Garage) check it: parleyd presigns the URLs clients PUT and GET blobs with (query-string
// auth, UNSIGNED-PAYLOAD) and signs its own requests (DELETE of a blob) with an Authorization
// header. Path-style URLs: http(s)://host[:port]/bucket/key.
//
// The S3 flavour of the algorithm: the path is not normalised (no dot segments removed, no
// double slashes merged) and is URI-encoded once, segment by segment; query names and values are
// URI-encoded and sorted by encoded name, then encoded value; header names are lowercased,
// values trimmed with inner runs of spaces collapsed to one, repeated names joined with ','.
//
// Pure functions: no I/O, no clock (the caller passes `now`), safe from any thread. They throw
// only std::invalid_argument (a presign expiry outside 1..604800 s: a configuration the server
// validates at start-up) and std::runtime_error if OpenSSL fails (out of memory).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace parley::media::s3 {

struct credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string region;  // e.g. "us-east-1"; MinIO and Garage accept whatever they are configured for
  std::string service = "s3";
};

// The payload hash of a request whose body is not signed (presigned uploads: the client's bytes
// are checked by size and SHA-256 elsewhere).
inline constexpr std::string_view unsigned_payload = "UNSIGNED-PAYLOAD";
// SHA-256 of the empty string: the payload hash of a request without a body.
inline constexpr std::string_view empty_payload_sha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
// S3 refuses presigned URLs valid for longer than 7 days.
inline constexpr std::chrono::seconds max_presign_expiry{604800};

using name_values = std::vector<std::pair<std::string, std::string>>;

struct request {
  std::string method;   // "GET", "PUT", "DELETE", "HEAD": as sent
  std::string host;     // host[:port] exactly as sent in the Host header
  std::string path;     // raw, unencoded: "/bucket/key name" (empty means "/")
  name_values query;    // raw (unencoded) names and values; a name alone has value ""
  name_values headers;  // to sign besides Host; names in any case; not x-amz-date (added here)
  std::string payload_sha256_hex = std::string(unsigned_payload);
};

// RFC 3986 percent-encoding as SigV4 wants it: A-Z a-z 0-9 - . _ ~ kept, every other byte as %XX
// (upper-case hex), '/' kept only when `encode_slash` is false.
[[nodiscard]] std::string uri_encode(std::string_view s, bool encode_slash);
// The request path as it goes both in the URL and in the canonical request: uri_encode with '/'
// kept, "/" for an empty path, a leading '/' added if missing.
[[nodiscard]] std::string canonical_uri(std::string_view path);
// name=value pairs, encoded, sorted, joined with '&' (also the query string to send).
[[nodiscard]] std::string canonical_query(const name_values& query);
// "YYYYMMDDTHHMMSSZ" in UTC, the x-amz-date / X-Amz-Date format (sub-seconds dropped).
[[nodiscard]] std::string amz_date(std::chrono::system_clock::time_point t);
// "yyyymmdd/region/service/aws4_request".
[[nodiscard]] std::string credential_scope(std::string_view yyyymmdd, const credentials& c);

// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, yyyymmdd), region), service), "aws4_request").
[[nodiscard]] std::array<std::uint8_t, 32> signing_key(std::string_view secret,
                                                       std::string_view yyyymmdd,
                                                       std::string_view region,
                                                       std::string_view service);

// Exposed for tests and debugging (S3 prints its canonical request on SignatureDoesNotMatch).
// The canonical request of exactly `r`: method, canonical_uri, canonical_query, the headers Host
// plus r.headers, the signed header list, r.payload_sha256_hex; nothing added.
[[nodiscard]] std::string canonical_request(const request& r);
// "AWS4-HMAC-SHA256\n" amz_date "\n" scope "\n" hex(SHA-256(canonical_request)).
[[nodiscard]] std::string string_to_sign(std::string_view amz_date, std::string_view scope,
                                         std::string_view canonical_request);
// hex(HMAC-SHA256(signing_key, string_to_sign)): the 64 lowercase hex digits sent.
[[nodiscard]] std::string signature(std::span<const std::uint8_t, 32> signing_key,
                                    std::string_view string_to_sign);

// Query-string auth (a presigned URL). Returns the whole query string to put after '?': r.query
// and X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders, encoded
// and sorted, then X-Amz-Signature last. The URL is
//   scheme "://" r.host canonical_uri(r.path) "?" presign_query(...)
// and the client must send exactly the headers in r.headers (Host is always signed). r.query must
// not hold X-Amz-* authentication parameters of its own. No session token (X-Amz-Security-Token)
// support: long-lived keys only. Throws std::invalid_argument unless 1 s <= expires <= 7 days.
[[nodiscard]] std::string presign_query(const credentials& c, const request& r,
                                        std::chrono::system_clock::time_point now,
                                        std::chrono::seconds expires);

// Header auth. The request must then carry Host (r.host), r.headers, and:
//   x-amz-date: amz_date
//   x-amz-content-sha256: content_sha256   (when not empty; see below)
//   Authorization: authorization
// For service "s3", which requires it, x-amz-content-sha256 (= r.payload_sha256_hex) is added to
// the signed headers unless r.headers already has it; content_sha256 is then that value, and
// empty otherwise.
struct signed_headers {
  std::string authorization;
  std::string amz_date;
  std::string content_sha256;
};
[[nodiscard]] signed_headers sign_headers(const credentials& c, const request& r,
                                          std::chrono::system_clock::time_point now);

}  // namespace parley::media::s3
