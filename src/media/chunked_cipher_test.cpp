#include "media/chunked_cipher.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>

#include "temp_dir.hpp"

namespace parley::media {
namespace {

namespace fs = std::filesystem;

std::span<const std::uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string to_hex(std::string_view s) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const unsigned char c : s) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 0xf]);
  }
  return out;
}

std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    const std::uint64_t v = gen();
    for (std::size_t j = 0; j < 8 && i + j < n; ++j) out[i + j] = static_cast<char>(v >> (8 * j));
  }
  return out;
}

std::string read_all(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path.string());
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_all(const fs::path& path, std::string_view data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!f.flush()) throw std::runtime_error("cannot write " + path.string());
}

// SHA-256 computed here, independently of the code under test.
media_sha256 sha256_of(std::string_view data) {
  media_sha256 out{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("EVP_Digest failed");
  }
  return out;
}

template <class T>
boost::system::error_code error_of(const boost::system::result<T>& r) {
  return r ? boost::system::error_code{} : r.error();
}

// The key 00 01 02 .. 1f, for known-answer tests only (a real key is never fixed, nor reused).
media_key counting_key() {
  media_key key{};
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(i);
  return key;
}

// How many work files (*.part) decrypt_file left in `dir`.
int work_files_in(const fs::path& dir) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) n += entry.path().extension() == ".part";
  return n;
}

// A 4-chunk file (three full chunks and 5 bytes), encrypted, for the attacks below.
struct sealed_sample {
  test_support::temp_dir dir{"parley_chunked_cipher_"};
  media_key key = new_media_key();
  std::string plain = random_bytes(3 * chunk_plain_bytes + 5, 42);
  std::string cipher;
  sealed_file sealed;

  sealed_sample() {
    write_all(dir.path() / "plain", plain);
    const auto r = encrypt_file(dir.path() / "plain", dir.path() / "sealed", key);
    if (!r) throw std::runtime_error("encrypt_file failed: " + r.error().message());
    sealed = *r;
    cipher = read_all(dir.path() / "sealed");
  }

  // Writes `blob` and decrypts it into dir/out, announcing `size` and `sha256`.
  boost::system::result<std::uint64_t> decrypt(std::string_view blob, std::uint64_t size,
                                               const media_sha256& sha256) const {
    write_all(dir.path() / "blob", blob);
    return decrypt_file(dir.path() / "blob", out(), key, size, sha256);
  }
  // The same blob, announced as its own size and hash: what an attacker who could also change
  // the message would do. Only the chunk tags can catch it.
  boost::system::result<std::uint64_t> decrypt_as_itself(std::string_view blob) const {
    return decrypt(blob, blob.size(), sha256_of(blob));
  }
  fs::path out() const { return dir.path() / "out"; }
};

TEST(chunked_cipher, sizes_count_chunks_and_add_one_tag_per_chunk) {
  EXPECT_EQ(chunk_count(0), 1u);
  EXPECT_EQ(chunk_count(1), 1u);
  EXPECT_EQ(chunk_count(65536), 1u);
  EXPECT_EQ(chunk_count(65537), 2u);
  EXPECT_EQ(chunk_count(3 * 65536 + 5), 4u);
  EXPECT_EQ(ciphertext_size(0), 16u);
  EXPECT_EQ(ciphertext_size(1), 17u);
  EXPECT_EQ(ciphertext_size(65535), 65551u);
  EXPECT_EQ(ciphertext_size(65536), 65552u);
  EXPECT_EQ(ciphertext_size(65537), 65569u);
  EXPECT_EQ(ciphertext_size(max_media_plain_bytes), max_media_plain_bytes + 16u * 1526u);
  EXPECT_EQ(plaintext_size(16), 0u);
  EXPECT_EQ(plaintext_size(17), 1u);
  EXPECT_EQ(plaintext_size(65552), 65536u);
  EXPECT_EQ(plaintext_size(65569), 65537u);
}

TEST(chunked_cipher, sizes_no_plaintext_maps_to_are_refused) {
  for (std::uint64_t c = 0; c < 16; ++c) EXPECT_FALSE(plaintext_size(c)) << c;
  // 1..16 bytes after whole sealed chunks would be a bare tag: only the empty file has one.
  for (std::uint64_t k = 1; k <= 3; ++k) {
    for (std::uint64_t extra = 1; extra <= 16; ++extra) {
      EXPECT_FALSE(plaintext_size(k * chunk_sealed_bytes + extra)) << k << " " << extra;
    }
    EXPECT_TRUE(plaintext_size(k * chunk_sealed_bytes + 17)) << k;
  }
}

TEST(chunked_cipher, sizes_round_trip_exhaustively_over_the_first_chunks) {
  int mismatches = 0;
  for (std::uint64_t p = 0; p <= 3 * chunk_plain_bytes + 5; ++p) {
    if (plaintext_size(ciphertext_size(p)) != p) ++mismatches;
  }
  for (std::uint64_t c = 0; c <= 3 * chunk_sealed_bytes + 40; ++c) {
    const auto p = plaintext_size(c);
    if (p && ciphertext_size(*p) != c) ++mismatches;
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(chunked_cipher, files_round_trip_byte_for_byte) {
  test_support::temp_dir dir("parley_chunked_cipher_");
  const std::size_t sizes[] = {
      0, 1, 65535, 65536, 65537, 3 * 65536 + 5, 5 * 1000 * 1000 + 123};  // the last one: about 5 MB
  std::uint64_t seed = 1;
  for (const std::size_t n : sizes) {
    SCOPED_TRACE(n);
    const auto plain = random_bytes(n, seed++);
    const auto key = new_media_key();
    write_all(dir.path() / "plain", plain);

    const auto sealed = encrypt_file(dir.path() / "plain", dir.path() / "sealed", key);
    ASSERT_TRUE(sealed) << sealed.error().message();
    const auto cipher = read_all(dir.path() / "sealed");
    EXPECT_EQ(sealed->plain_size, n);
    EXPECT_EQ(sealed->size, ciphertext_size(n));
    EXPECT_EQ(cipher.size(), ciphertext_size(n));
    EXPECT_EQ(sealed->sha256, sha256_of(cipher));
    if (n >= 16) {
      EXPECT_EQ(cipher.find(plain.substr(0, 16)), std::string::npos);  // not in clear
    }

    const auto opened = decrypt_file(dir.path() / "sealed", dir.path() / "opened", key,
                                     sealed->size, sealed->sha256);
    ASSERT_TRUE(opened) << opened.error().message();
    EXPECT_EQ(*opened, n);
    EXPECT_TRUE(read_all(dir.path() / "opened") == plain);
    EXPECT_EQ(work_files_in(dir.path()), 0);
    fs::remove(dir.path() / "opened");  // never replaced: the next size gets a fresh name
  }
}

// Values from an independent implementation (Python's `cryptography`, AESGCM) of the format in
// chunked_cipher.hpp: they pin nonce, AAD, chunk size and tag placement.
TEST(chunked_cipher, output_matches_the_documented_format) {
  const auto key = counting_key();
  chunk_sealer sealer(key);
  std::string out;
  ASSERT_TRUE(sealer.seal(0, true, {}, out));
  EXPECT_EQ(to_hex(out), "8f5a9b4bbfba08bf1b7d3ee37a78f43a");  // the empty file: a bare tag
  out.clear();
  ASSERT_TRUE(sealer.seal(0, true, bytes("parley"), out));
  EXPECT_EQ(to_hex(out), "7eddc7b2d05533354db78c006c375f98eac85df38f5f");

  test_support::temp_dir dir("parley_chunked_cipher_");
  std::string plain(65536 + 3, '\0');
  for (std::size_t j = 0; j < plain.size(); ++j) plain[j] = static_cast<char>(j % 251);
  write_all(dir.path() / "plain", plain);
  const auto sealed = encrypt_file(dir.path() / "plain", dir.path() / "sealed", key);
  ASSERT_TRUE(sealed);
  const auto cipher = read_all(dir.path() / "sealed");
  ASSERT_EQ(cipher.size(), 65571u);
  EXPECT_EQ(to_hex(cipher.substr(0, 8)), "0ebdb7ddb12985ba");
  EXPECT_EQ(to_hex(cipher.substr(cipher.size() - 19)), "0ccca4f23acc3b17c3a6e3bdbb038ddab9998b");
  EXPECT_EQ(sha256_hex(sealed->sha256),
            "252e565e908977ce17702fa3e6ebc81294f2a9237b5bfac24b8027b83f19993f");
}

TEST(chunked_cipher, a_flipped_byte_in_any_chunk_is_tampered) {
  const sealed_sample s;
  ASSERT_EQ(s.cipher.size(), 3 * chunk_sealed_bytes + 21);
  for (std::size_t chunk = 0; chunk < 4; ++chunk) {
    const std::size_t begin = chunk * chunk_sealed_bytes;
    const std::size_t length = chunk < 3 ? chunk_sealed_bytes : 21;
    // The first ciphertext byte, one in the middle, and the tag's last byte.
    for (const std::size_t offset : {std::size_t{0}, length / 2, length - 1}) {
      SCOPED_TRACE(testing::Message() << "chunk " << chunk << " offset " << offset);
      auto bad = s.cipher;
      bad[begin + offset] ^= 0x01;
      EXPECT_EQ(error_of(s.decrypt_as_itself(bad)), errc::tampered);
      // Announced with the original hash, it fails too (the tag is checked first).
      EXPECT_EQ(error_of(s.decrypt(bad, s.sealed.size, s.sealed.sha256)), errc::tampered);
      EXPECT_FALSE(fs::exists(s.out()));
      EXPECT_EQ(work_files_in(s.dir.path()), 0);
    }
  }
}

TEST(chunked_cipher, swapped_chunks_are_tampered) {
  const sealed_sample s;
  for (const auto& [a, b] : {std::pair{0, 1}, std::pair{1, 2}, std::pair{0, 2}}) {
    SCOPED_TRACE(testing::Message() << a << "<->" << b);
    auto bad = s.cipher;
    std::swap_ranges(bad.begin() + a * chunk_sealed_bytes,
                     bad.begin() + (a + 1) * chunk_sealed_bytes,
                     bad.begin() + b * chunk_sealed_bytes);
    ASSERT_NE(bad, s.cipher);
    EXPECT_EQ(error_of(s.decrypt_as_itself(bad)), errc::tampered);
    EXPECT_FALSE(fs::exists(s.out()));
  }
}

TEST(chunked_cipher, truncation_at_a_chunk_boundary_is_caught) {
  const sealed_sample s;
  for (const std::size_t chunks : {1, 2, 3}) {
    SCOPED_TRACE(chunks);
    const auto cut = s.cipher.substr(0, chunks * chunk_sealed_bytes);
    // The blob was cut, the message was not: the announced size gives it away.
    EXPECT_EQ(error_of(s.decrypt(cut, s.sealed.size, s.sealed.sha256)), errc::truncated);
    // Size and hash announced to match the cut file: its new last chunk was sealed "not last".
    EXPECT_EQ(error_of(s.decrypt_as_itself(cut)), errc::tampered);
    // Size matching, hash not: the marker still fails first.
    EXPECT_EQ(error_of(s.decrypt(cut, cut.size(), s.sealed.sha256)), errc::tampered);
    EXPECT_FALSE(fs::exists(s.out()));
    EXPECT_EQ(work_files_in(s.dir.path()), 0);
  }
  EXPECT_EQ(error_of(s.decrypt("", s.sealed.size, s.sealed.sha256)), errc::truncated);
}

TEST(chunked_cipher, truncation_inside_a_chunk_is_caught) {
  const sealed_sample s;
  for (const std::size_t length :
       {std::size_t{100}, chunk_sealed_bytes + 1000, 3 * chunk_sealed_bytes + 20}) {
    SCOPED_TRACE(length);
    const auto cut = s.cipher.substr(0, length);
    EXPECT_EQ(error_of(s.decrypt(cut, s.sealed.size, s.sealed.sha256)), errc::truncated);
    EXPECT_EQ(error_of(s.decrypt_as_itself(cut)), errc::tampered);
    EXPECT_FALSE(fs::exists(s.out()));
  }
  // Cut inside the last chunk's tag: not even a possible size.
  const auto cut = s.cipher.substr(0, 3 * chunk_sealed_bytes + 11);
  EXPECT_EQ(error_of(s.decrypt_as_itself(cut)), errc::bad_size);
}

TEST(chunked_cipher, extra_bytes_are_trailing_bytes) {
  const sealed_sample s;
  EXPECT_EQ(error_of(s.decrypt(s.cipher + "x", s.sealed.size, s.sealed.sha256)),
            errc::trailing_bytes);
  const auto last_chunk = s.cipher.substr(3 * chunk_sealed_bytes);
  EXPECT_EQ(error_of(s.decrypt(s.cipher + last_chunk, s.sealed.size, s.sealed.sha256)),
            errc::trailing_bytes);
  EXPECT_FALSE(fs::exists(s.out()));
  EXPECT_EQ(work_files_in(s.dir.path()), 0);
}

TEST(chunked_cipher, the_wrong_key_is_tampered) {
  const sealed_sample s;
  write_all(s.dir.path() / "blob", s.cipher);
  const auto other_key = new_media_key();
  ASSERT_NE(other_key, s.key);
  const auto r =
      decrypt_file(s.dir.path() / "blob", s.out(), other_key, s.sealed.size, s.sealed.sha256);
  EXPECT_EQ(error_of(r), errc::tampered);
  EXPECT_FALSE(fs::exists(s.out()));
  // And the right key still opens the same file.
  EXPECT_TRUE(s.decrypt(s.cipher, s.sealed.size, s.sealed.sha256));
  EXPECT_EQ(read_all(s.out()), s.plain);
}

TEST(chunked_cipher, a_valid_but_different_file_is_a_hash_mismatch) {
  test_support::temp_dir dir("parley_chunked_cipher_");
  // Two files of the same size under the same key, so that every tag of the second verifies:
  // only the announced hash tells them apart. (Reusing a key is for this test only.)
  const auto key = new_media_key();
  write_all(dir.path() / "a", random_bytes(70000, 7));
  write_all(dir.path() / "b", random_bytes(70000, 8));
  const auto a = encrypt_file(dir.path() / "a", dir.path() / "a.sealed", key);
  const auto b = encrypt_file(dir.path() / "b", dir.path() / "b.sealed", key);
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->size, b->size);
  ASSERT_NE(a->sha256, b->sha256);

  const auto out = dir.path() / "out";
  EXPECT_EQ(error_of(decrypt_file(dir.path() / "b.sealed", out, key, a->size, a->sha256)),
            errc::hash_mismatch);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(work_files_in(dir.path()), 0);
  EXPECT_TRUE(decrypt_file(dir.path() / "b.sealed", out, key, b->size, b->sha256));
}

TEST(chunked_cipher, a_failed_decryption_leaves_an_existing_output_untouched) {
  const sealed_sample s;
  write_all(s.out(), "the previous file");
  auto bad = s.cipher;
  bad[5] ^= 0x20;
  EXPECT_EQ(error_of(s.decrypt_as_itself(bad)), errc::tampered);
  EXPECT_EQ(read_all(s.out()), "the previous file");
  EXPECT_EQ(work_files_in(s.dir.path()), 0);
  // Nor does a successful one replace it: the file that is there is the user's.
  EXPECT_EQ(error_of(s.decrypt(s.cipher, s.sealed.size, s.sealed.sha256)), errc::exists);
  EXPECT_EQ(read_all(s.out()), "the previous file");
  EXPECT_EQ(work_files_in(s.dir.path()), 0);
}

// The work file is a name of its own, created exclusively (O_EXCL, so never through a link):
// a file already named `out`.part, the user's, is neither truncated nor removed.
TEST(chunked_cipher, the_work_file_never_writes_over_an_existing_name) {
  const sealed_sample s;
  const fs::path users = s.dir.path() / "out.part";
  write_all(users, "the user's own out.part");
  ASSERT_TRUE(s.decrypt(s.cipher, s.sealed.size, s.sealed.sha256));
  EXPECT_EQ(read_all(s.out()), s.plain);
  EXPECT_EQ(read_all(users), "the user's own out.part");
  EXPECT_EQ(work_files_in(s.dir.path()), 1) << "only the user's out.part";
}

TEST(chunked_cipher, announced_sizes_are_checked_before_reading) {
  const sealed_sample s;
  EXPECT_EQ(error_of(s.decrypt(s.cipher, 5, s.sealed.sha256)), errc::bad_size);
  EXPECT_EQ(error_of(s.decrypt(s.cipher, chunk_sealed_bytes + 3, s.sealed.sha256)), errc::bad_size);
  EXPECT_EQ(
      error_of(s.decrypt(s.cipher, ciphertext_size(max_media_plain_bytes + 1), s.sealed.sha256)),
      errc::too_large);
  // The limit itself is allowed: this blob is merely too short for it.
  EXPECT_EQ(error_of(s.decrypt(s.cipher, ciphertext_size(max_media_plain_bytes), s.sealed.sha256)),
            errc::truncated);
  EXPECT_FALSE(fs::exists(s.out()));
}

TEST(chunked_cipher, files_over_the_limit_are_refused_before_writing) {
  test_support::temp_dir dir("parley_chunked_cipher_");
  { std::ofstream create(dir.path() / "huge"); }
  fs::resize_file(dir.path() / "huge", max_media_plain_bytes + 1);  // sparse: costs nothing
  const auto r = encrypt_file(dir.path() / "huge", dir.path() / "sealed", new_media_key());
  EXPECT_EQ(error_of(r), errc::too_large);
  EXPECT_FALSE(fs::exists(dir.path() / "sealed"));
}

TEST(chunked_cipher, missing_files_and_zero_keys_are_errors) {
  test_support::temp_dir dir("parley_chunked_cipher_");
  const auto key = new_media_key();
  EXPECT_EQ(error_of(encrypt_file(dir.path() / "absent", dir.path() / "sealed", key)), errc::io);
  EXPECT_FALSE(fs::exists(dir.path() / "sealed"));

  write_all(dir.path() / "plain", "hello");
  const media_key zero{};
  EXPECT_EQ(error_of(encrypt_file(dir.path() / "plain", dir.path() / "sealed", zero)),
            errc::bad_key);
  EXPECT_FALSE(fs::exists(dir.path() / "sealed"));
  const auto sealed = encrypt_file(dir.path() / "plain", dir.path() / "sealed", key);
  ASSERT_TRUE(sealed);
  EXPECT_EQ(error_of(decrypt_file(dir.path() / "sealed", dir.path() / "out", zero, sealed->size,
                                  sealed->sha256)),
            errc::bad_key);
  EXPECT_EQ(error_of(decrypt_file(dir.path() / "absent", dir.path() / "out", key, sealed->size,
                                  sealed->sha256)),
            errc::io);
  EXPECT_FALSE(fs::exists(dir.path() / "out"));

  // Encrypting a file onto itself is refused, and the file survives.
  EXPECT_EQ(error_of(encrypt_file(dir.path() / "plain", dir.path() / "plain", key)), errc::io);
  EXPECT_EQ(read_all(dir.path() / "plain"), "hello");

  chunk_sealer sealer(zero);
  std::string out;
  EXPECT_EQ(error_of(sealer.seal(0, true, bytes("x"), out)), errc::bad_key);
  EXPECT_TRUE(out.empty());
}

TEST(chunked_cipher, sealer_and_opener_bind_each_chunk_to_its_index_and_last_marker) {
  const auto key = new_media_key();
  const auto a = random_bytes(chunk_plain_bytes, 1);
  const auto b = random_bytes(10, 2);
  chunk_sealer sealer(key);
  std::string sealed;
  ASSERT_TRUE(sealer.seal(0, false, bytes(a), sealed));
  ASSERT_TRUE(sealer.seal(1, true, bytes(b), sealed));
  ASSERT_EQ(sealed.size(), a.size() + b.size() + 2 * chunk_tag_bytes);
  const auto first = bytes(sealed).first(chunk_sealed_bytes);
  const auto second = bytes(sealed).subspan(chunk_sealed_bytes);

  chunk_opener opener(key);
  std::string kept = "kept";
  EXPECT_EQ(error_of(opener.open(1, false, first, kept)), errc::tampered);  // other index
  EXPECT_EQ(error_of(opener.open(0, true, first, kept)), errc::tampered);   // other marker
  EXPECT_EQ(error_of(opener.open(2, true, second, kept)), errc::tampered);
  EXPECT_EQ(error_of(opener.open(1, false, second, kept)), errc::truncated);  // short, not last
  EXPECT_EQ(error_of(opener.open(0, true, first.first(15), kept)), errc::truncated);
  EXPECT_EQ(kept, "kept");  // nothing unauthenticated was appended

  // After failures the same opener still opens the genuine chunks, appending.
  std::string plain = "prefix";
  ASSERT_TRUE(opener.open(0, false, first, plain));
  ASSERT_TRUE(opener.open(1, true, second, plain));
  EXPECT_TRUE(plain == "prefix" + a + b);

  const std::string too_big(chunk_plain_bytes + 1, 'x');
  const auto before = sealed.size();
  EXPECT_EQ(error_of(sealer.seal(2, true, bytes(too_big), sealed)), errc::too_large);
  EXPECT_EQ(sealed.size(), before);
  const std::string too_big_sealed(chunk_sealed_bytes + 1, 'x');
  EXPECT_EQ(error_of(opener.open(0, true, bytes(too_big_sealed), kept)), errc::too_large);
}

TEST(chunked_cipher, keys_are_random_and_hashes_render_as_lowercase_hex) {
  const auto k1 = new_media_key();
  const auto k2 = new_media_key();
  EXPECT_NE(k1, k2);
  EXPECT_NE(k1, media_key{});

  const auto digest = sha256_of("abc");
  const auto hex = sha256_hex(digest);
  EXPECT_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_from_hex(hex), digest);
  std::string upper = hex;
  std::transform(upper.begin(), upper.end(), upper.begin(), [](char c) {
    return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  });
  EXPECT_FALSE(sha256_from_hex(upper));
  EXPECT_FALSE(sha256_from_hex(hex.substr(1)));
  EXPECT_FALSE(sha256_from_hex(hex.substr(1) + "g"));
}

TEST(chunked_cipher, errors_have_a_category_and_messages) {
  const boost::system::error_code ec = errc::tampered;
  EXPECT_EQ(ec.category().name(), std::string("parley.media"));
  EXPECT_EQ(ec, errc::tampered);
  EXPECT_NE(ec, errc::truncated);
  EXPECT_NE(ec.message().find("does not verify"), std::string::npos);
  EXPECT_NE(make_error_code(errc::hash_mismatch).message(), make_error_code(errc::io).message());
}

}  // namespace
}  // namespace parley::media
