#include <gtest/gtest.h>

#include <set>
#include <string>

#include "media/blob_store.hpp"

namespace parley::media {
namespace {

TEST(blob_id, new_ids_are_32_lowercase_hex_digits_and_differ) {
  std::set<blob_id> seen;
  for (int i = 0; i < 1000; ++i) {
    const auto id = new_blob_id();
    EXPECT_EQ(id.size(), 32u);
    EXPECT_TRUE(valid_blob_id(id)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);  // 128 random bits: a repeat means a broken generator
}

TEST(blob_id, only_32_lowercase_hex_digits_are_valid) {
  EXPECT_TRUE(valid_blob_id("0123456789abcdef0123456789abcdef"));
  EXPECT_FALSE(valid_blob_id(""));
  EXPECT_FALSE(valid_blob_id("0123456789abcdef0123456789abcde"));    // 31
  EXPECT_FALSE(valid_blob_id("0123456789abcdef0123456789abcdef0"));  // 33
  EXPECT_FALSE(valid_blob_id("0123456789ABCDEF0123456789abcdef"));   // upper case
  EXPECT_FALSE(valid_blob_id("0123456789abcdef0123456789abcdeg"));
  // Nothing that could walk out of a directory or into an object key's structure.
  EXPECT_FALSE(valid_blob_id("../../../../../../etc/passwd0000"));
  EXPECT_FALSE(valid_blob_id("0123456789abcdef/123456789abcdef"));
  std::string with_nul = "0123456789abcdef0123456789abcdef";
  with_nul[16] = '\0';
  EXPECT_FALSE(valid_blob_id(with_nul));
}

TEST(blob_id, sha256_hex_is_64_lowercase_hex_digits) {
  const std::string empty_sha256 =
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  EXPECT_TRUE(valid_sha256_hex(empty_sha256));
  EXPECT_FALSE(valid_sha256_hex(empty_sha256.substr(1)));
  EXPECT_FALSE(valid_sha256_hex(empty_sha256 + "0"));
  std::string upper = empty_sha256;
  upper[0] = 'E';
  EXPECT_FALSE(valid_sha256_hex(upper));
  std::string spaced = empty_sha256;
  spaced[10] = ' ';
  EXPECT_FALSE(valid_sha256_hex(spaced));
  EXPECT_FALSE(valid_sha256_hex(""));
  EXPECT_FALSE(valid_sha256_hex(new_blob_id()));  // a blob id is not a hash
}

}  // namespace
}  // namespace parley::media
