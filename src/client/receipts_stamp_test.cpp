#include <gtest/gtest.h>

#include <cstdint>

#include "client/client.hpp"

namespace parley::client {
namespace {

namespace v2 = parley::v2;

v2::Frame receipts(std::uint64_t stamp) {
  v2::Frame f;
  auto* r = f.mutable_receipts()->add_receipts();
  r->set_chat_id(1);
  r->set_user("bob");
  r->set_status(v2::MESSAGE_STATUS_DELIVERED);
  r->set_up_to_seq(3);
  f.mutable_receipts()->set_stamp(stamp);
  return f;
}

v2::Frame queue_empty(std::uint64_t receipts_stamp) {
  v2::Frame f;
  f.mutable_queue_empty()->set_receipts_stamp(receipts_stamp);
  return f;
}

TEST(receipts_stamp_tracker, before_queue_empty_stamps_are_only_remembered) {
  receipts_stamp_tracker t(5);
  EXPECT_EQ(t.token(), 5u);
  EXPECT_FALSE(t.on_frame(receipts(0)));   // the snapshot after authentication
  EXPECT_FALSE(t.on_frame(receipts(40)));  // a live push during the drain
  EXPECT_FALSE(t.on_frame(receipts(12)));
  EXPECT_EQ(t.token(), 5u);
  // QueueEmpty's own stamp is lower than a live push seen before it: the highest wins.
  EXPECT_TRUE(t.on_frame(queue_empty(30)));
  EXPECT_EQ(t.token(), 40u);
}

TEST(receipts_stamp_tracker, queue_empty_stamp_above_the_pushes_is_kept) {
  receipts_stamp_tracker t;
  EXPECT_EQ(t.token(), 0u);
  EXPECT_FALSE(t.on_frame(receipts(20)));
  EXPECT_TRUE(t.on_frame(queue_empty(30)));
  EXPECT_EQ(t.token(), 30u);
}

TEST(receipts_stamp_tracker, after_queue_empty_each_stamped_receipts_raises_the_token) {
  receipts_stamp_tracker t(5);
  EXPECT_TRUE(t.on_frame(queue_empty(10)));
  EXPECT_EQ(t.token(), 10u);
  // A change split over frames: only its last frame carries the stamp.
  EXPECT_FALSE(t.on_frame(receipts(0)));
  EXPECT_FALSE(t.on_frame(receipts(0)));
  EXPECT_EQ(t.token(), 10u);
  EXPECT_TRUE(t.on_frame(receipts(80)));
  EXPECT_EQ(t.token(), 80u);
  EXPECT_TRUE(t.on_frame(receipts(81)));
  EXPECT_EQ(t.token(), 81u);
  // Never lowered, nor moved by the same stamp again.
  EXPECT_FALSE(t.on_frame(receipts(50)));
  EXPECT_FALSE(t.on_frame(receipts(81)));
  EXPECT_FALSE(t.on_frame(queue_empty(60)));
  EXPECT_EQ(t.token(), 81u);
}

TEST(receipts_stamp_tracker, the_kept_token_is_never_lowered) {
  receipts_stamp_tracker t(100);
  EXPECT_FALSE(t.on_frame(receipts(50)));
  EXPECT_FALSE(t.on_frame(queue_empty(70)));  // e.g. a server that restarted
  EXPECT_EQ(t.token(), 100u);
  EXPECT_FALSE(t.on_frame(receipts(99)));
  EXPECT_TRUE(t.on_frame(receipts(101)));
  EXPECT_EQ(t.token(), 101u);
}

TEST(receipts_stamp_tracker, a_server_without_stamps_moves_nothing) {
  receipts_stamp_tracker t(7);
  EXPECT_FALSE(t.on_frame(receipts(0)));
  EXPECT_FALSE(t.on_frame(queue_empty(0)));
  EXPECT_FALSE(t.on_frame(receipts(0)));
  EXPECT_EQ(t.token(), 7u);
}

TEST(receipts_stamp_tracker, other_frames_change_nothing) {
  receipts_stamp_tracker t(3);
  v2::Frame envelope;
  envelope.mutable_envelope()->set_chat_id(1);
  envelope.mutable_envelope()->set_seq(99);
  v2::Frame presence;
  presence.mutable_presence()->set_username("bob");
  EXPECT_FALSE(t.on_frame(envelope));
  EXPECT_FALSE(t.on_frame(presence));
  EXPECT_FALSE(t.on_frame(v2::Frame{}));
  EXPECT_EQ(t.token(), 3u);
  // Nor do they count as QueueEmpty: a stamped Receipts is still only remembered.
  EXPECT_FALSE(t.on_frame(receipts(50)));
  EXPECT_EQ(t.token(), 3u);
  EXPECT_TRUE(t.on_frame(queue_empty(0)));
  EXPECT_EQ(t.token(), 50u);
}

TEST(receipts_stamp_tracker, receipts_not_applied_before_queue_empty_keep_the_old_token) {
  receipts_stamp_tracker t(5);
  EXPECT_FALSE(t.on_frame(receipts(0)));
  t.unapplied();  // that frame's watermarks are not in the local store
  EXPECT_FALSE(t.on_frame(receipts(0)));
  EXPECT_FALSE(t.on_frame(queue_empty(30)));
  EXPECT_FALSE(t.on_frame(receipts(40)));
  EXPECT_EQ(t.token(), 5u);
  // The next session starts from the kept token again.
  receipts_stamp_tracker next(t.token());
  EXPECT_TRUE(next.on_frame(queue_empty(45)));
  EXPECT_EQ(next.token(), 45u);
}

TEST(receipts_stamp_tracker, receipts_not_applied_after_queue_empty_stop_the_token_there) {
  receipts_stamp_tracker t;
  EXPECT_TRUE(t.on_frame(queue_empty(30)));
  EXPECT_TRUE(t.on_frame(receipts(35)));
  t.unapplied();
  EXPECT_FALSE(t.on_frame(receipts(40)));
  EXPECT_FALSE(t.on_frame(receipts(41)));
  EXPECT_EQ(t.token(), 35u);
}

}  // namespace
}  // namespace parley::client
