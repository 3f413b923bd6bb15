// Client-side encryption of media files (photos, videos, up to max_media_plain_bytes), the format
// docs/security.md describes. The blob store and parleyd only ever see the output.
//
// Format (version 1), with a fresh random 32-byte AES-256 key per file:
//   - the plaintext is cut into chunks of chunk_plain_bytes (65536); the last chunk holds the
//     rest (1..65536 bytes); an empty file is one empty chunk, so
//     chunk_count = plaintext_size == 0 ? 1 : ceil(plaintext_size / 65536);
//   - chunk i (0-based) is sealed with AES-256-GCM under
//       nonce = 4 zero bytes | big-endian uint64 i                       (12 bytes)
//       AAD   = big-endian uint64 i | 1 byte: 1 if chunk i is the last, else 0   (9 bytes)
//     giving ciphertext (as long as the chunk) | 16-byte tag;
//   - the ciphertext file is the sealed chunks, concatenated; no header, nothing else, so
//     ciphertext_size = plaintext_size + 16 * chunk_count.
// The index in nonce and AAD stops chunks being reordered, the last-chunk byte stops the file
// being cut short at a chunk boundary. Deterministic nonces are safe because a key encrypts
// exactly one file: never pass the same key to two encryptions.
//
// The SHA-256 of the whole ciphertext file is computed while encrypting: the blob store checks
// it on upload and the recipient checks it (with the exact size) before trusting anything.
//
// Errors are values (errc, media_category()); nothing here throws but new_media_key (when the
// system's random generator fails) and std::bad_alloc. Thread safety: free functions may run
// concurrently on different files; a chunk_sealer or chunk_opener is used by one thread at a time.
#pragma once

#include <array>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

// OpenSSL's cipher context, kept out of this header.
struct evp_cipher_ctx_st;

namespace parley::media {

inline constexpr std::size_t chunk_plain_bytes = 64 * 1024;
inline constexpr std::size_t chunk_tag_bytes = 16;
inline constexpr std::size_t chunk_sealed_bytes = chunk_plain_bytes + chunk_tag_bytes;
inline constexpr std::size_t media_key_bytes = 32;
inline constexpr std::size_t media_sha256_bytes = 32;
// The largest file a client may send: 100 MB, decimal (WhatsApp's limit is stated the same way).
inline constexpr std::uint64_t max_media_plain_bytes = 100ull * 1000 * 1000;

using media_key = std::array<std::uint8_t, media_key_bytes>;
using media_sha256 = std::array<std::uint8_t, media_sha256_bytes>;

// Number of chunks a plaintext of that size is cut into (1 for an empty file).
[[nodiscard]] std::uint64_t chunk_count(std::uint64_t plaintext_size) noexcept;
// plaintext_size + 16 * chunk_count(plaintext_size). Exact for any plaintext_size up to 2^63.
[[nodiscard]] std::uint64_t ciphertext_size(std::uint64_t plaintext_size) noexcept;
// The plaintext size whose ciphertext is exactly `ciphertext_size` bytes, or nullopt when there is
// none (below 16 bytes, or 1..16 bytes past a whole number of full sealed chunks).
[[nodiscard]] std::optional<std::uint64_t> plaintext_size(std::uint64_t ciphertext_size) noexcept;

enum class errc {
  io = 1,          // a file could not be opened, read, written, synced or renamed
  too_large,       // the plaintext is (or would be) larger than max_media_plain_bytes
  truncated,       // the ciphertext is shorter than expected
  tampered,        // a tag does not verify: modified, reordered or cut chunks, or the wrong key
  hash_mismatch,   // every chunk verifies but the file's SHA-256 is not the announced one
  trailing_bytes,  // the ciphertext is longer than expected
  bad_key,         // an all-zero key: never generated (an unset field), refused both ways
  bad_size,        // the announced size is no ciphertext size at all (see plaintext_size)
  library,         // OpenSSL failed (out of memory or similar)
  exists,          // decrypt_file: `out` exists (it is never replaced)
};

const boost::system::error_category& media_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), media_category()};
}

// What encrypt_file produced: the plaintext's size, the ciphertext file's size and SHA-256.
struct sealed_file {
  std::uint64_t plain_size = 0;
  std::uint64_t size = 0;
  media_sha256 sha256{};
};

// 64 lowercase hex digits.
[[nodiscard]] std::string sha256_hex(std::span<const std::uint8_t, media_sha256_bytes> digest);
// The digest written as 64 lowercase hex digits (as sha256_hex writes it), or nullopt for
// anything else.
[[nodiscard]] std::optional<media_sha256> sha256_from_hex(std::string_view hex) noexcept;

// A fresh key from OpenSSL's RAND_bytes. Throws std::runtime_error if the generator fails (no
// key is better than a weak one).
[[nodiscard]] media_key new_media_key();

// Encrypts the regular file `in` (at most max_media_plain_bytes) into `out`, created or truncated
// (mode 0600), written, then fsync'd. Streams: reads 256 KiB at a time and holds at most that
// much plaintext and its ciphertext in memory, whatever the file's size.
// Errors: bad_key and too_large (found before `out` is touched), io (also when `in` is not a
// regular file, is `out` itself, or changes size while being read), library. On an error after
// `out` was opened, `out` is removed.
[[nodiscard]] boost::system::result<sealed_file> encrypt_file(
    const std::filesystem::path& in, const std::filesystem::path& out,
    std::span<const std::uint8_t, media_key_bytes> key);

// Decrypts the ciphertext file `in`, which must be exactly `expected_size` bytes with SHA-256
// `expected_sha256` (both from the sender's message), into `out`, which must not exist: it is
// never replaced, not even by a file that appears while this runs. Writes a work file of its own
// next to it (`out` + ".XXXXXX.part", created exclusively, so never through a link), fsyncs it
// and gives it the name `out` only once everything verified: every chunk's tag (with its index
// and the last-chunk marker), the size and the whole file's hash. On any error the work file is
// removed and `out` is untouched. Returns the plaintext's size. Checks, in this order:
//   bad_key; bad_size or too_large (expected_size itself); truncated / trailing_bytes (the file's
//   length, also if it changes while being read); tampered (chunk by chunk, in order);
//   hash_mismatch (once the whole file is read); exists (at the end, atomically); io and
//   library whenever they happen.
// Note that a file cut at a chunk boundary whose announced size and hash were changed to match
// still fails (tampered): its new last chunk was sealed as "not last".
// The naming is not made durable (no directory fsync): after a crash `out` may be missing, and
// the file is downloaded again; a process killed meanwhile leaves its work file behind.
[[nodiscard]] boost::system::result<std::uint64_t> decrypt_file(
    const std::filesystem::path& in, const std::filesystem::path& out,
    std::span<const std::uint8_t, media_key_bytes> key, std::uint64_t expected_size,
    std::span<const std::uint8_t, media_sha256_bytes> expected_sha256);

namespace detail {
struct cipher_ctx_deleter {
  void operator()(evp_cipher_ctx_st* ctx) const noexcept;
};
}  // namespace detail

// In-memory chunk sealing, for streams that are not files (the benchmark, tests, uploads from
// memory). The caller cuts chunks as the format says: every chunk but the last is exactly
// chunk_plain_bytes, indices count up from 0, the last chunk (and only it) has last = true.
// Holds the key inside an OpenSSL context (cleansed when destroyed); one cipher setup per object,
// each chunk only sets a new nonce.
class chunk_sealer {
 public:
  explicit chunk_sealer(std::span<const std::uint8_t, media_key_bytes> key);
  ~chunk_sealer();
  chunk_sealer(chunk_sealer&&) noexcept;
  chunk_sealer& operator=(chunk_sealer&&) noexcept;
  chunk_sealer(const chunk_sealer&) = delete;
  chunk_sealer& operator=(const chunk_sealer&) = delete;

  // Appends ciphertext | tag (plaintext.size() + 16 bytes) to `out`. Errors: too_large (a chunk
  // over chunk_plain_bytes; nothing appended), bad_key, library (`out` restored).
  [[nodiscard]] boost::system::result<void> seal(std::uint64_t index, bool last,
                                                 std::span<const std::uint8_t> plaintext,
                                                 std::string& out);

 private:
  std::unique_ptr<evp_cipher_ctx_st, detail::cipher_ctx_deleter> ctx_;
  boost::system::error_code setup_error_;
};

class chunk_opener {
 public:
  explicit chunk_opener(std::span<const std::uint8_t, media_key_bytes> key);
  ~chunk_opener();
  chunk_opener(chunk_opener&&) noexcept;
  chunk_opener& operator=(chunk_opener&&) noexcept;
  chunk_opener(const chunk_opener&) = delete;
  chunk_opener& operator=(const chunk_opener&) = delete;

  // Verifies sealed chunk `index` (ciphertext | tag) as the last chunk or not, and appends its
  // plaintext to `plain_out` only if the tag verifies: unauthenticated bytes never reach the
  // caller. Errors: truncated (under 16 bytes, or a chunk that is not last and not full),
  // too_large (over chunk_sealed_bytes), tampered (the tag does not verify: other bytes, other
  // index, other last marker or other key), bad_key, library. On error `plain_out` is unchanged.
  [[nodiscard]] boost::system::result<void> open(std::uint64_t index, bool last,
                                                 std::span<const std::uint8_t> sealed,
                                                 std::string& plain_out);

 private:
  std::unique_ptr<evp_cipher_ctx_st, detail::cipher_ctx_deleter> ctx_;
  boost::system::error_code setup_error_;
};

}  // namespace parley::media

template <>
struct boost::system::is_error_code_enum<parley::media::errc> : std::true_type {};
