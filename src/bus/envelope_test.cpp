// The bus's wire encodings (envelope.cpp): the hand-written Envelope push, byte for byte
// protobuf's; Receipts pushes split at 256 watermarks a frame, with the change's stamp on the
// last frame only.
#include <gtest/gtest.h>

#include <algorithm>
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

// What protobuf's own serializer makes of the message, to compare with the hand encoding.
std::string protobuf_encoding(const store::chat_message& m) {
  parley::v2::Frame f;
  to_wire(m, *f.mutable_envelope());
  return f.SerializeAsString();
}

TEST(envelope, hand_encoding_matches_protobufs) {
  std::vector<store::chat_message> cases;
  store::chat_message m;
  cases.push_back(m);  // every field at its default: an empty Envelope, still a body
  m.chat = 1;
  m.seq = 127;  // one-byte varints at their edge
  m.id = 128;   // and two bytes
  m.sender_name = "alice";
  m.sender_device = 300;
  m.sent_at_ms = 1'764'547'200'000;
  m.payload = std::string(100, 'p');
  m.cipher_type = static_cast<std::uint32_t>(parley::v2::CIPHER_TYPE_SENDER_KEY_MESSAGE);
  cases.push_back(m);
  m.chat = ~std::uint64_t{0};  // ten-byte varints
  m.seq = ~std::uint64_t{0} >> 1;
  m.id = std::uint64_t{1} << 63;
  m.sender_name = std::string(32, 'n');
  m.payload = std::string(64 * 1024, '\0');  // a three-byte length, and zero bytes kept
  m.payload[100] = '\x80';
  cases.push_back(m);
  m.payload = std::string(16'383, 'x');  // the last two-byte length
  m.sender_name.clear();
  m.sender_device = 0;
  cases.push_back(m);
  m.payload.clear();            // no payload, as a system message
  m.cipher_type = 0xFFFF'FFFF;  // an enum's int32 -1, sign-extended
  cases.push_back(m);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(encode_envelope(cases[i]), protobuf_encoding(cases[i])) << "case " << i;
    parley::v2::Frame back;
    ASSERT_TRUE(back.ParseFromString(encode_envelope(cases[i]))) << "case " << i;
    EXPECT_TRUE(back.has_envelope()) << "case " << i;
    EXPECT_EQ(back.envelope().payload(), cases[i].payload) << "case " << i;
  }
  // A group's system message goes through protobuf itself (it has a sub-message).
  auto event = std::make_shared<store::group_event>();
  event->user = "bob";
  m.event = event;
  EXPECT_EQ(encode_envelope(m), protobuf_encoding(m));
  // The shared frame of a bus::envelope is the same bytes.
  envelope shared(std::make_shared<const store::chat_message>(cases[1]));
  EXPECT_EQ(*shared.frame(), protobuf_encoding(cases[1]));
}

// One push per device, devices in order of first appearance and each one's marks in the order
// given: with a few devices (found by a scan) and with many (by an index built past 8).
TEST(receipts_by_device, groups_marks_by_device_in_order_of_first_appearance) {
  for (const std::uint64_t devices : {1u, 2u, 8u, 9u, 40u}) {
    std::vector<store::receipt_delivery> receipts;
    for (std::uint64_t i = 0; i < 5 * devices; ++i) {
      store::receipt_delivery r;
      r.device = 100 + (i * 7) % devices;  // every device, in a shuffled order, five times
      r.mark.chat = i;
      receipts.push_back(r);
    }
    const auto got = receipts_by_device(receipts);
    ASSERT_EQ(got.size(), devices);
    std::vector<std::uint64_t> first_seen;
    for (const auto& r : receipts) {
      if (std::find(first_seen.begin(), first_seen.end(), r.device) == first_seen.end())
        first_seen.push_back(r.device);
    }
    for (std::size_t d = 0; d < got.size(); ++d) {
      EXPECT_EQ(got[d].first, first_seen[d]) << devices << " devices";
      std::vector<std::uint64_t> chats, expected;
      for (const auto& m : got[d].second) chats.push_back(m.chat);
      for (const auto& r : receipts)
        if (r.device == got[d].first) expected.push_back(r.mark.chat);
      EXPECT_EQ(chats, expected) << devices << " devices, device " << got[d].first;
    }
  }
  EXPECT_TRUE(receipts_by_device({}).empty());
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
