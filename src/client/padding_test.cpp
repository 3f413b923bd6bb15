#include "client/padding.hpp"

#include <gtest/gtest.h>

namespace parley::client {
namespace {

TEST(padding, sizes_come_in_160_byte_steps_and_round_trip) {
  for (std::size_t n : {0u, 1u, 158u, 159u, 160u, 319u, 5000u}) {
    const std::string text(n, 'x');
    const auto padded = pad(text);
    EXPECT_EQ(padded.size() % padding_block, 0u) << n;
    EXPECT_GT(padded.size(), n);  // room for the 0x80 marker, always
    EXPECT_EQ(unpad(padded), text) << n;
  }
  EXPECT_EQ(pad("").size(), 160u);
  EXPECT_EQ(pad(std::string(159, 'a')).size(), 160u);
  EXPECT_EQ(pad(std::string(160, 'a')).size(), 320u);
  // Text that itself ends in zero bytes or 0x80 survives.
  const std::string tricky = std::string("a\x80\0\0", 4);
  EXPECT_EQ(unpad(pad(tricky)), tricky);
}

TEST(padding, bytes_without_the_marker_are_refused) {
  EXPECT_FALSE(unpad(""));
  EXPECT_FALSE(unpad(std::string(160, '\0')));
  EXPECT_FALSE(unpad("no marker at all"));
}

}  // namespace
}  // namespace parley::client
