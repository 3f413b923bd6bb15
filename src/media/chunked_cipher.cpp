#include "media/chunked_cipher.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <utility>
#include <vector>

#include "common/posix_file.hpp"
#include "media/blob_store.hpp"

namespace parley::media {
namespace {

using posix::fd_guard;

class category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "parley.media"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::io:
        return "a media file could not be read or written";
      case errc::too_large:
        return "the media file is larger than the limit";
      case errc::truncated:
        return "the encrypted media file is shorter than announced";
      case errc::tampered:
        return "the encrypted media file does not verify (modified, reordered, cut or wrong key)";
      case errc::hash_mismatch:
        return "the encrypted media file is not the one announced (SHA-256 differs)";
      case errc::trailing_bytes:
        return "the encrypted media file is longer than announced";
      case errc::bad_key:
        return "the media key is all zeros (never generated)";
      case errc::bad_size:
        return "the announced size is not the size of any encrypted media file";
      case errc::library:
        return "OpenSSL failed";
      case errc::exists:
        return "the file to decrypt into exists (it is not replaced)";
    }
    return "unknown media error";
  }
};

constexpr std::size_t nonce_bytes = 12;
constexpr std::size_t aad_bytes = 9;
// Files are read and written this many chunks at a time (256 KiB of plaintext).
constexpr std::size_t chunks_per_batch = 4;

// OpenSSL leaves errors on the thread's queue; a stale entry there can be misread later by
// unrelated OpenSSL users on the same thread (SSL_get_error looks at it), so clear it.
boost::system::error_code library_failure() noexcept {
  ERR_clear_error();
  return errc::library;
}

void put_be64(std::uint8_t* out, std::uint64_t v) noexcept {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<std::uint8_t>(v & 0xff);
    v >>= 8;
  }
}

std::array<std::uint8_t, nonce_bytes> chunk_nonce(std::uint64_t index) noexcept {
  std::array<std::uint8_t, nonce_bytes> nonce{};  // 4 zero bytes, then the index
  put_be64(nonce.data() + 4, index);
  return nonce;
}

std::array<std::uint8_t, aad_bytes> chunk_aad(std::uint64_t index, bool last) noexcept {
  std::array<std::uint8_t, aad_bytes> aad{};
  put_be64(aad.data(), index);
  aad[8] = last ? 1 : 0;
  return aad;
}

bool all_zero(std::span<const std::uint8_t> bytes) noexcept {
  std::uint8_t acc = 0;
  for (const auto b : bytes) acc |= b;
  return acc == 0;
}

struct md_ctx_deleter {
  void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
};
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, md_ctx_deleter>;

md_ctx_ptr new_sha256() {
  md_ctx_ptr ctx(EVP_MD_CTX_new());
  if (ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) ctx.reset();
  return ctx;
}

// Sets up `ctx` for AES-256-GCM with `key`, in the direction `encrypt`; each chunk then only sets
// its nonce. Returns the error to report for every later chunk, or success.
boost::system::error_code setup_cipher(evp_cipher_ctx_st* ctx, bool encrypt,
                                       std::span<const std::uint8_t, media_key_bytes> key) {
  if (all_zero(key)) return errc::bad_key;
  if (ctx == nullptr) return library_failure();
  const int ok = encrypt ? EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, nullptr, nullptr)
                         : EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, nullptr, nullptr);
  if (ok != 1 || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, static_cast<int>(nonce_bytes),
                                     nullptr) != 1) {
    return library_failure();
  }
  const int keyed = encrypt ? EVP_EncryptInit_ex(ctx, nullptr, nullptr, key.data(), nullptr)
                            : EVP_DecryptInit_ex(ctx, nullptr, nullptr, key.data(), nullptr);
  if (keyed != 1) return library_failure();
  return {};
}

// ---- POSIX file helpers ----


// Removes `path` when it goes out of scope, unless keep() was called.
class remove_on_failure {
 public:
  explicit remove_on_failure(std::filesystem::path path) : path_(std::move(path)) {}
  ~remove_on_failure() {
    if (!kept_) ::unlink(path_.c_str());
  }
  remove_on_failure(const remove_on_failure&) = delete;
  remove_on_failure& operator=(const remove_on_failure&) = delete;

  void keep() noexcept { kept_ = true; }

 private:
  std::filesystem::path path_;
  bool kept_ = false;
};

// Gives the file `from` the name `to` if nothing has it, atomically: renameat2 with
// RENAME_NOREPLACE, or, where the file system lacks that, a hard link and the old name's
// removal. errc::exists if `to` exists; `from` is then left as it was.
boost::system::result<void> name_without_replacing(const std::filesystem::path& from,
                                                   const std::filesystem::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return {};
  if (errno == EEXIST) return errc::exists;
  if (errno != EINVAL && errno != ENOSYS) return errc::io;
  if (::link(from.c_str(), to.c_str()) != 0) return errno == EEXIST ? errc::exists : errc::io;
  ::unlink(from.c_str());
  return {};
}

// Reads until `size` bytes or end of file. Returns the number read, or -1 on a read error.
std::int64_t read_full(int fd, void* buffer, std::size_t size) noexcept {
  auto* p = static_cast<char*>(buffer);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, p + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return static_cast<std::int64_t>(done);
}

bool write_full(int fd, const void* buffer, std::size_t size) noexcept {
  const auto* p = static_cast<const char*>(buffer);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// True when `fd` is at its end: one more byte cannot be read. nullopt on a read error.
std::optional<bool> at_end(int fd) noexcept {
  char probe;
  const auto n = read_full(fd, &probe, 1);
  if (n < 0) return std::nullopt;
  return n == 0;
}


int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

const boost::system::error_category& media_category() noexcept {
  static const category_impl instance;
  return instance;
}

// ---- sizes ----

std::uint64_t chunk_count(std::uint64_t plaintext_size) noexcept {
  if (plaintext_size == 0) return 1;
  return (plaintext_size - 1) / chunk_plain_bytes + 1;  // ceil without overflow
}

std::uint64_t ciphertext_size(std::uint64_t plaintext_size) noexcept {
  return plaintext_size + chunk_tag_bytes * chunk_count(plaintext_size);
}

std::optional<std::uint64_t> plaintext_size(std::uint64_t ciphertext_size) noexcept {
  if (ciphertext_size < chunk_tag_bytes) return std::nullopt;
  if (ciphertext_size == chunk_tag_bytes) return 0;  // the empty file: one empty chunk
  const std::uint64_t full = ciphertext_size / chunk_sealed_bytes;
  const std::uint64_t rest = ciphertext_size % chunk_sealed_bytes;
  if (rest == 0) return full * chunk_plain_bytes;
  // A last chunk of 1..65535 plaintext bytes is 17..65551 sealed bytes; 1..16 bytes after the
  // full chunks would be a tag with no plaintext, which only the empty file has.
  if (rest <= chunk_tag_bytes) return std::nullopt;
  return full * chunk_plain_bytes + (rest - chunk_tag_bytes);
}

// ---- hex, keys ----

std::string sha256_hex(std::span<const std::uint8_t, media_sha256_bytes> digest) {
  return to_hex(std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()));
}

std::optional<media_sha256> sha256_from_hex(std::string_view hex) noexcept {
  if (hex.size() != 2 * media_sha256_bytes) return std::nullopt;
  media_sha256 out{};
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = hex_value(hex[2 * i]);
    const int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

media_key new_media_key() {
  media_key key{};
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    ERR_clear_error();
    throw std::runtime_error("RAND_bytes failed: no random media key");
  }
  return key;
}

// ---- chunk_sealer / chunk_opener ----

void detail::cipher_ctx_deleter::operator()(evp_cipher_ctx_st* ctx) const noexcept {
  EVP_CIPHER_CTX_free(ctx);  // also cleanses the key schedule
}

chunk_sealer::chunk_sealer(std::span<const std::uint8_t, media_key_bytes> key)
    : ctx_(EVP_CIPHER_CTX_new()) {
  setup_error_ = setup_cipher(ctx_.get(), true, key);
}
chunk_sealer::~chunk_sealer() = default;
chunk_sealer::chunk_sealer(chunk_sealer&&) noexcept = default;
chunk_sealer& chunk_sealer::operator=(chunk_sealer&&) noexcept = default;

boost::system::result<void> chunk_sealer::seal(std::uint64_t index, bool last,
                                               std::span<const std::uint8_t> plaintext,
                                               std::string& out) {
  if (setup_error_) return setup_error_;
  if (!ctx_) return library_failure();  // moved from
  if (plaintext.size() > chunk_plain_bytes) return errc::too_large;
  auto* ctx = ctx_.get();
  const auto nonce = chunk_nonce(index);
  const auto aad = chunk_aad(index, last);
  int len = 0;
  if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data()) != 1 ||
      EVP_EncryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1) {
    return library_failure();
  }
  const std::size_t old_size = out.size();
  const std::size_t n = plaintext.size();
  out.resize(old_size + n + chunk_tag_bytes);
  auto* dst = reinterpret_cast<unsigned char*>(out.data() + old_size);
  bool ok = true;
  if (n > 0) {
    ok = EVP_EncryptUpdate(ctx, dst, &len, plaintext.data(), static_cast<int>(n)) == 1 &&
         len == static_cast<int>(n);
  }
  ok = ok && EVP_EncryptFinal_ex(ctx, dst + n, &len) == 1 && len == 0;
  ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(chunk_tag_bytes),
                                 dst + n) == 1;
  if (!ok) {
    out.resize(old_size);
    return library_failure();
  }
  return {};
}

chunk_opener::chunk_opener(std::span<const std::uint8_t, media_key_bytes> key)
    : ctx_(EVP_CIPHER_CTX_new()) {
  setup_error_ = setup_cipher(ctx_.get(), false, key);
}
chunk_opener::~chunk_opener() = default;
chunk_opener::chunk_opener(chunk_opener&&) noexcept = default;
chunk_opener& chunk_opener::operator=(chunk_opener&&) noexcept = default;

boost::system::result<void> chunk_opener::open(std::uint64_t index, bool last,
                                               std::span<const std::uint8_t> sealed,
                                               std::string& plain_out) {
  if (setup_error_) return setup_error_;
  if (!ctx_) return library_failure();  // moved from
  if (sealed.size() < chunk_tag_bytes) return errc::truncated;
  if (sealed.size() > chunk_sealed_bytes) return errc::too_large;
  if (!last && sealed.size() != chunk_sealed_bytes) return errc::truncated;
  auto* ctx = ctx_.get();
  const std::size_t n = sealed.size() - chunk_tag_bytes;
  const auto nonce = chunk_nonce(index);
  const auto aad = chunk_aad(index, last);
  // EVP_CIPHER_CTX_ctrl takes the tag through a non-const pointer.
  std::array<std::uint8_t, chunk_tag_bytes> tag{};
  std::copy_n(sealed.data() + n, chunk_tag_bytes, tag.data());
  int len = 0;
  if (EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data()) != 1 ||
      EVP_DecryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1) {
    return library_failure();
  }
  const std::size_t old_size = plain_out.size();
  plain_out.resize(old_size + n);
  auto* dst = reinterpret_cast<unsigned char*>(plain_out.data() + old_size);
  const bool decrypted =
      (n == 0 || (EVP_DecryptUpdate(ctx, dst, &len, sealed.data(), static_cast<int>(n)) == 1 &&
                  len == static_cast<int>(n))) &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(tag.size()), tag.data()) ==
          1;
  if (!decrypted) {
    OPENSSL_cleanse(dst, n);
    plain_out.resize(old_size);
    return library_failure();
  }
  // GCM decrypts before it authenticates: the bytes just written are not to be trusted until
  // the final call has checked the tag.
  if (EVP_DecryptFinal_ex(ctx, dst + n, &len) != 1) {
    OPENSSL_cleanse(dst, n);
    plain_out.resize(old_size);
    ERR_clear_error();
    return errc::tampered;
  }
  return {};
}

// ---- files ----

boost::system::result<sealed_file> encrypt_file(
    const std::filesystem::path& in, const std::filesystem::path& out,
    std::span<const std::uint8_t, media_key_bytes> key) {
  if (all_zero(key)) return errc::bad_key;
  fd_guard in_fd(::open(in.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in_fd.valid()) return errc::io;
  struct stat st {};
  if (::fstat(in_fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0) return errc::io;
  const auto plain_size = static_cast<std::uint64_t>(st.st_size);
  if (plain_size > max_media_plain_bytes) return errc::too_large;

  // Truncating `out` when it is `in` would destroy the only copy.
  struct stat out_st {};
  if (::stat(out.c_str(), &out_st) == 0 && out_st.st_dev == st.st_dev &&
      out_st.st_ino == st.st_ino) {
    return errc::io;
  }

  chunk_sealer sealer(key);
  auto sha = new_sha256();
  if (!sha) return library_failure();

  fd_guard out_fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out_fd.valid()) return errc::io;
  remove_on_failure cleanup(out);

  const std::uint64_t count = chunk_count(plain_size);
  std::vector<std::uint8_t> plain(chunks_per_batch * chunk_plain_bytes);
  std::string sealed;
  sealed.reserve(chunks_per_batch * chunk_sealed_bytes);
  std::uint64_t index = 0;
  std::uint64_t remaining = plain_size;
  while (index < count) {
    // Batches are whole chunks but for the file's last one; the empty file is one empty batch.
    const auto batch = static_cast<std::size_t>(
        std::min<std::uint64_t>(remaining, chunks_per_batch * chunk_plain_bytes));
    if (read_full(in_fd.get(), plain.data(), batch) != static_cast<std::int64_t>(batch)) {
      return errc::io;  // a read error, or the file shrank since fstat
    }
    sealed.clear();
    std::size_t offset = 0;
    do {
      const std::size_t n = std::min(chunk_plain_bytes, batch - offset);
      const auto sealed_chunk =
          sealer.seal(index, index + 1 == count, std::span(plain.data() + offset, n), sealed);
      if (!sealed_chunk) return sealed_chunk.error();
      offset += n;
      ++index;
    } while (offset < batch);
    remaining -= batch;
    if (EVP_DigestUpdate(sha.get(), sealed.data(), sealed.size()) != 1) return library_failure();
    if (!write_full(out_fd.get(), sealed.data(), sealed.size())) return errc::io;
  }
  const auto ended = at_end(in_fd.get());
  if (!ended || !*ended) return errc::io;  // a read error, or the file grew since fstat

  sealed_file result;
  result.plain_size = plain_size;
  result.size = ciphertext_size(plain_size);
  unsigned int digest_len = 0;
  if (EVP_DigestFinal_ex(sha.get(), result.sha256.data(), &digest_len) != 1 ||
      digest_len != result.sha256.size()) {
    return library_failure();
  }
  if (::fsync(out_fd.get()) != 0 || !out_fd.close()) return errc::io;
  cleanup.keep();
  return result;
}

boost::system::result<std::uint64_t> decrypt_file(
    const std::filesystem::path& in, const std::filesystem::path& out,
    std::span<const std::uint8_t, media_key_bytes> key, std::uint64_t expected_size,
    std::span<const std::uint8_t, media_sha256_bytes> expected_sha256) {
  if (all_zero(key)) return errc::bad_key;
  const auto plain_size = plaintext_size(expected_size);
  if (!plain_size) return errc::bad_size;
  if (*plain_size > max_media_plain_bytes) return errc::too_large;

  fd_guard in_fd(::open(in.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in_fd.valid()) return errc::io;
  struct stat st {};
  if (::fstat(in_fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0) return errc::io;
  const auto actual_size = static_cast<std::uint64_t>(st.st_size);
  if (actual_size < expected_size) return errc::truncated;
  if (actual_size > expected_size) return errc::trailing_bytes;

  chunk_opener opener(key);
  auto sha = new_sha256();
  if (!sha) return library_failure();

  // A name of its own (O_EXCL: never an existing file, never through a link), mode 0600.
  std::string part_name = out.string() + ".XXXXXX.part";
  fd_guard part_fd(::mkostemps(part_name.data(), 5, O_CLOEXEC));
  if (!part_fd.valid()) return errc::io;
  const std::filesystem::path part = part_name;
  remove_on_failure cleanup(part);

  const std::uint64_t count = chunk_count(*plain_size);
  std::vector<std::uint8_t> sealed(chunks_per_batch * chunk_sealed_bytes);
  std::string plain;
  plain.reserve(chunks_per_batch * chunk_plain_bytes);
  std::uint64_t index = 0;
  std::uint64_t remaining = expected_size;
  while (index < count) {
    // Whole sealed chunks but for the file's last one (never empty: at least its tag).
    const auto batch = static_cast<std::size_t>(
        std::min<std::uint64_t>(remaining, chunks_per_batch * chunk_sealed_bytes));
    const auto got = read_full(in_fd.get(), sealed.data(), batch);
    if (got < 0) return errc::io;
    if (got != static_cast<std::int64_t>(batch)) return errc::truncated;  // shrank since fstat
    if (EVP_DigestUpdate(sha.get(), sealed.data(), batch) != 1) return library_failure();
    plain.clear();
    std::size_t offset = 0;
    while (offset < batch) {
      const std::size_t n = std::min(chunk_sealed_bytes, batch - offset);
      const auto opened =
          opener.open(index, index + 1 == count, std::span(sealed.data() + offset, n), plain);
      if (!opened) return opened.error();
      offset += n;
      ++index;
    }
    remaining -= batch;
    if (!write_full(part_fd.get(), plain.data(), plain.size())) return errc::io;
  }
  const auto ended = at_end(in_fd.get());
  if (!ended) return errc::io;
  if (!*ended) return errc::trailing_bytes;  // grew since fstat

  media_sha256 digest{};
  unsigned int digest_len = 0;
  if (EVP_DigestFinal_ex(sha.get(), digest.data(), &digest_len) != 1 ||
      digest_len != digest.size()) {
    return library_failure();
  }
  if (!std::equal(digest.begin(), digest.end(), expected_sha256.begin())) {
    return errc::hash_mismatch;
  }
  if (::fsync(part_fd.get()) != 0 || !part_fd.close()) return errc::io;
  if (auto named = name_without_replacing(part, out); !named) return named.error();
  cleanup.keep();
  return *plain_size;
}

}  // namespace parley::media
