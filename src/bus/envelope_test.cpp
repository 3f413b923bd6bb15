// The bus's wire encodings (envelope.cpp): Receipts pushes split at 256 watermarks a frame,
// with the change's stamp on the last frame only.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "bus/bus.hpp"

namespace parley::bus {
namespace {

std::vector<parley::v2::Receipts> decoded(const std::vector<wire::encoded_frame>& frames) {
  std::vector<parley::v2::Receipts> out;
  for (const auto& f : frames) {
    parley::v2::Frame frame;
    EXPECT_TRUE(frame.ParseFromString(*f));
    EXPECT_TRUE(frame.has_receipts());
    EXPECT_EQ(frame.request_id(), 0u) << "a push";
    out.push_back(frame.receipts());
  }
  return out;
}

TEST(receipts_frames, at_most_256_watermarks_a_frame_and_the_stamp_on_the_last) {
  std::vector<store::watermark> marks;
  for (std::uint64_t i = 0; i < 600; ++i) {
    store::watermark m;
    m.chat = 1000 + i;
    m.user = "u" + std::to_string(i);
    m.status = i % 2 ? store::message_status::read : store::message_status::delivered;
    m.up_to = i + 1;
    m.at_ms = 5000 + i;
    m.stamp = i == 123 ? 999 : 10 + i;  // the highest is not the last
    marks.push_back(m);
  }
  const auto frames = decoded(receipts_frames(marks));
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].receipts_size(), 256);
  EXPECT_EQ(frames[1].receipts_size(), 256);
  EXPECT_EQ(frames[2].receipts_size(), 88);
  EXPECT_EQ(frames[0].stamp(), 0u);
  EXPECT_EQ(frames[1].stamp(), 0u);
  EXPECT_EQ(frames[2].stamp(), 999u);
  std::uint64_t i = 0;
  for (const auto& f : frames) {
    for (const auto& r : f.receipts()) {
      EXPECT_EQ(r.chat_id(), 1000 + i);
      EXPECT_EQ(r.user(), "u" + std::to_string(i));
      EXPECT_EQ(r.status(),
                i % 2 ? parley::v2::MESSAGE_STATUS_READ : parley::v2::MESSAGE_STATUS_DELIVERED);
      EXPECT_EQ(r.up_to_seq(), i + 1);
      EXPECT_EQ(r.at_ms(), 5000 + i);
      ++i;
    }
  }
  EXPECT_EQ(i, 600u);

  // Exactly 256: one frame, with the stamp. None: no frame.
  marks.resize(256);
  const auto one = decoded(receipts_frames(marks));
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].receipts_size(), 256);
  EXPECT_EQ(one[0].stamp(), 999u);
  EXPECT_TRUE(receipts_frames({}).empty());
}

}  // namespace
}  // namespace parley::bus
