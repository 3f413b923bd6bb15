// The login index's rules (login_index.hpp): lazily built per device, kept by the writer's
// changes, never under-reporting, and forgetting only what a client confirmed or what its
// bound pushed out.
#include "store/rocksdb/login_index.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <utility>
#include <vector>

namespace parley::store {
namespace {

using kind = login_index::change::kind;
using behind_list = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
using chat_list = std::vector<std::uint64_t>;

TEST(login_index, a_device_has_none_until_its_first_login_fills_it) {
  login_index index(100, 100);
  index.apply({{kind::message, 1, 10, 5}}, 101, 101);  // no entry yet: nothing kept
  auto first = index.lookup(1, 0);
  EXPECT_FALSE(first.behind_known);
  EXPECT_FALSE(first.moved_known);
  EXPECT_EQ(first.stamp, 101u) << "the last stamp applied";
  // The writer keeps the new entry while the scan runs...
  index.apply({{kind::message, 1, 20, 3}}, 102, 102);
  // ...and a second login meanwhile scans too: the entry is not usable yet.
  EXPECT_FALSE(index.lookup(1, 0).behind_known);
  index.filled(1, first.entry, {{10, 5}});
  EXPECT_FALSE(index.lookup(1, 0).behind_known) << "the second scan has not reported";
  // (that lookup became a third scan)
  index.filled(1, first.entry, {});
  index.filled(1, first.entry, {});
  auto ready = index.lookup(1, 0);
  ASSERT_TRUE(ready.behind_known);
  EXPECT_EQ(ready.behind, (behind_list{{10, 5}, {20, 3}}));
  EXPECT_FALSE(ready.moved_known) << "no stamp presented";
  EXPECT_EQ(ready.stamp, 102u);
}

TEST(login_index, a_failed_scan_drops_the_entry) {
  login_index index(100, 100);
  const auto scan = index.lookup(1, 0);
  EXPECT_FALSE(scan.behind_known);
  index.apply({{kind::message, 1, 10, 5}}, 101, 101);
  index.fill_failed(1, scan.entry);
  EXPECT_EQ(index.size().first, 0u);
  EXPECT_FALSE(index.lookup(1, 0).behind_known) << "the next login scans again";
}

// Two logins of one device scan at once and the first fails: the entry is dropped, a third
// login makes a new one, and the second scan's report must not make that one usable. Its scan
// ran before the new entry existed, and a message sent between the two (applied to the
// dropped entry) would be missing from the index: a login would not drain its chat.
TEST(login_index, a_scan_of_a_dropped_entry_does_not_fill_its_successor) {
  login_index index(100, 100);
  const auto a = index.lookup(1, 0);
  const auto b = index.lookup(1, 0);
  ASSERT_FALSE(a.behind_known);
  ASSERT_FALSE(b.behind_known);
  // b's scan has read chat 10 (nothing behind); then chat 10 gets seq 5, then a fails.
  index.apply({{kind::message, 1, 10, 5}}, 101, 101);
  index.fill_failed(1, a.entry);
  const auto c = index.lookup(1, 0);  // a new entry, filled by c's scan
  ASSERT_FALSE(c.behind_known);
  EXPECT_NE(c.entry, b.entry);
  index.filled(1, b.entry, {});  // the older scan reports late
  EXPECT_FALSE(index.lookup(1, 0).behind_known) << "c's scan has not reported yet";
  index.fill_failed(1, b.entry);  // nor does a late failure drop the new entry
  EXPECT_EQ(index.size().first, 1u);
}

// An index (bound: 3 moved chats per device) in which `device` logged in at stamp `at`.
std::unique_ptr<login_index> ready_index(std::uint64_t device, std::uint64_t at) {
  auto index = std::make_unique<login_index>(3, at);
  const auto scan = index->lookup(device, 0);
  index->filled(device, scan.entry, {});
  return index;
}

TEST(login_index, messages_raise_and_acks_at_or_above_remove) {
  auto ready = ready_index(1, 100);
  auto& index = *ready;
  index.apply(
      {{kind::message, 1, 10, 5}, {kind::message, 1, 10, 7}, {kind::message, 2, 10, 7}}, 101,
      101);
  index.apply({{kind::cursor, 1, 10, 6}}, 102, 102);
  EXPECT_EQ(index.lookup(1, 0).behind, (behind_list{{10, 7}})) << "6 does not cover 7";
  index.apply({{kind::cursor, 1, 10, 7}}, 103, 103);
  EXPECT_TRUE(index.lookup(1, 0).behind.empty());
}

TEST(login_index, settle_keeps_an_entry_a_newer_message_raised) {
  auto ready = ready_index(1, 100);
  auto& index = *ready;
  index.apply({{kind::message, 1, 10, 5}}, 101, 101);
  // A reader found the cursor at 5, but a message at 6 was committed before it settled.
  index.apply({{kind::message, 1, 10, 6}}, 102, 102);
  index.settle(1, 10, 5);
  EXPECT_EQ(index.lookup(1, 0).behind, (behind_list{{10, 6}}));
  index.settle(1, 10, 6);
  EXPECT_TRUE(index.lookup(1, 0).behind.empty());
}

// A request's stamp is its last write's sequence number: requests of one commit have their
// own (the position of the request's last write in the batch, from the commit's first).
TEST(login_index, moved_lists_after_the_stamp_and_forgets_what_the_client_has) {
  auto ready = ready_index(1, 100);
  auto& index = *ready;
  index.apply({{kind::moved, 1, 10, 1}}, 110, 110);
  // One commit of writes 120..125: the request moving chat 20 ended at its 2nd write, the
  // one moving chat 30 at its 5th.
  index.apply({{kind::moved, 1, 20, 2}, {kind::moved, 1, 30, 5}}, 120, 125);
  auto r = index.lookup(1, 110);
  ASSERT_TRUE(r.moved_known);
  EXPECT_EQ(r.moved, (chat_list{20, 30}));
  EXPECT_EQ(r.stamp, 125u) << "the last write applied";
  // A client that kept the stamp of chat 20's push (121) has not had chat 30's (124).
  r = index.lookup(1, 121);
  ASSERT_TRUE(r.moved_known);
  EXPECT_EQ(r.moved, (chat_list{30}));
  // What was at or below 121 is forgotten, and an older stamp is now below what the entry
  // answers for (a restored client, say): it gets everything, not too little.
  EXPECT_FALSE(index.lookup(1, 110).moved_known);
  // A chat that moves again gets the newer stamp.
  index.apply({{kind::moved, 1, 20, 1}}, 140, 140);
  EXPECT_EQ(index.lookup(1, 124).moved, (chat_list{20}));
  EXPECT_TRUE(index.lookup(1, 140).moved.empty());
}

TEST(login_index, stamps_it_cannot_answer_for_get_everything) {
  auto ready = ready_index(1, 100);
  auto& index = *ready;
  index.apply({{kind::moved, 1, 10, 1}}, 110, 110);
  index.apply({}, 120, 120);
  EXPECT_FALSE(index.lookup(1, 0).moved_known) << "no stamp";
  EXPECT_FALSE(index.lookup(1, 99).moved_known) << "older than the entry";
  EXPECT_FALSE(index.lookup(1, 121).moved_known) << "newer than any applied: not this store's";
  auto r = index.lookup(1, 100);
  ASSERT_TRUE(r.moved_known);
  EXPECT_EQ(r.moved, (chat_list{10}));
}

TEST(login_index, past_its_bound_moved_forgets_and_its_floor_rises) {
  auto ready = ready_index(1, 100);  // bound: 3 chats
  auto& index = *ready;
  index.apply({{kind::moved, 1, 10, 1}, {kind::moved, 1, 20, 2}, {kind::moved, 1, 30, 3}}, 110,
              112);
  index.apply({{kind::moved, 1, 40, 1}}, 120, 120);  // the fourth: all forgotten, floor 120
  EXPECT_FALSE(index.lookup(1, 112).moved_known);
  index.apply({{kind::moved, 1, 50, 1}}, 130, 130);
  auto r = index.lookup(1, 120);
  ASSERT_TRUE(r.moved_known);
  EXPECT_EQ(r.moved, (chat_list{50}));
}

// Moves are appended; past the bound, a chat that moved many times keeps only its latest
// move, and nothing a client has not had is lost.
TEST(login_index, past_its_bound_moved_keeps_each_chats_latest_move) {
  auto ready = ready_index(1, 100);  // bound: 3 moves
  auto& index = *ready;
  for (std::uint64_t stamp = 110; stamp <= 113; ++stamp)
    index.apply({{kind::moved, 1, 10, 1}}, stamp, stamp);
  auto r = index.lookup(1, 112);
  ASSERT_TRUE(r.moved_known) << "compacted, not forgotten";
  EXPECT_EQ(r.moved, (chat_list{10}));
  EXPECT_TRUE(index.lookup(1, 113).moved.empty());
}

}  // namespace
}  // namespace parley::store
