// End-to-end delivery through a real parleyd: online and offline delivery, cursors and
// watermark receipts, retries, crash safety, history, presence and typing.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <map>
#include <set>
#include <stop_token>
#include <thread>
#include <tuple>

#include "common/clock.hpp"
#include "test_client.hpp"

namespace parley::test {
namespace {

using namespace std::chrono_literals;

class messaging : public ::testing::Test {
 protected:
  boost::asio::io_context io;
  server_process server;

  test_client user(const std::string& name) {
    test_client c(io, server.url());
    c.register_and_login(name);
    return c;
  }
};

// The status of the message at (chat, seq) as `c` asks for it; UNSPECIFIED, and a failure,
// if the server refuses.
v2::MessageStatus status_of(test_client& c, std::uint64_t chat, std::uint64_t seq) {
  auto r = c.run(c.api().status(chat, seq));
  EXPECT_TRUE(r) << "status of " << chat << "/" << seq << ": " << client::describe(r.error());
  return r ? *r : v2::MESSAGE_STATUS_UNSPECIFIED;
}

// Nothing is pushed to `c` for `quiet` (and its connection is still open).
void expect_quiet(test_client& c, std::chrono::milliseconds quiet = 300ms) {
  auto f = c.run(c.api().next_push(quiet));
  if (f) {
    ADD_FAILURE() << c.username << " was pushed " << f->ShortDebugString();
    return;
  }
  EXPECT_EQ(f.error().what, client::client_error::kind::timeout) << client::describe(f.error());
}

// The one Receipt of a Receipts push.
v2::Receipt single_receipt(const v2::Frame& f) {
  EXPECT_TRUE(f.has_receipts()) << f.ShortDebugString();
  EXPECT_EQ(f.receipts().receipts_size(), 1) << f.ShortDebugString();
  return f.receipts().receipts_size() > 0 ? f.receipts().receipts(0) : v2::Receipt{};
}

TEST_F(messaging, online_delivery_with_delivered_and_read_receipts) {
  auto alice = user("alice");
  auto bob = user("bob");
  EXPECT_TRUE(alice.drain().empty());
  EXPECT_TRUE(bob.drain().empty());

  const auto sent = alice.send("bob", "hello bob");
  ASSERT_NE(sent.message_id(), 0u);
  ASSERT_NE(sent.chat_id(), 0u);
  EXPECT_EQ(sent.seq(), 1u);
  EXPECT_FALSE(sent.duplicate());
  EXPECT_GT(sent.sent_at_ms(), 0u);
  const auto chat = sent.chat_id();

  auto f = bob.next();
  ASSERT_TRUE(f.has_envelope()) << f.ShortDebugString();
  EXPECT_EQ(f.envelope().payload(), "hello bob");
  EXPECT_EQ(f.envelope().from(), "alice");
  EXPECT_EQ(f.envelope().from_device(), alice.device_id);
  EXPECT_EQ(f.envelope().message_id(), sent.message_id());
  EXPECT_EQ(f.envelope().chat_id(), chat);
  EXPECT_EQ(f.envelope().seq(), 1u);
  EXPECT_EQ(f.envelope().sent_at_ms(), sent.sent_at_ms());
  EXPECT_EQ(f.envelope().type(), v2::CIPHER_TYPE_SIGNAL_MESSAGE);
  EXPECT_EQ(status_of(alice, chat, 1), v2::MESSAGE_STATUS_SENT);

  bob.ack({test_client::cursor_of(f.envelope())});
  const auto delivered = single_receipt(alice.next());
  EXPECT_EQ(delivered.chat_id(), chat);
  EXPECT_EQ(delivered.user(), "bob");
  EXPECT_EQ(delivered.status(), v2::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(delivered.up_to_seq(), 1u);
  EXPECT_GE(delivered.at_ms(), sent.sent_at_ms());
  EXPECT_EQ(status_of(alice, chat, 1), v2::MESSAGE_STATUS_DELIVERED);

  ASSERT_TRUE(bob.run(bob.api().mark_read(chat, 1)));
  const auto read = single_receipt(alice.next());
  EXPECT_EQ(read.chat_id(), chat);
  EXPECT_EQ(read.user(), "bob");
  EXPECT_EQ(read.status(), v2::MESSAGE_STATUS_READ);
  EXPECT_EQ(read.up_to_seq(), 1u);
  EXPECT_EQ(status_of(alice, chat, 1), v2::MESSAGE_STATUS_READ);

  // A sender is not pushed her own message, nor a reader his own watermarks.
  expect_quiet(alice);
  expect_quiet(bob);
}

// Delivered and read are watermarks per chat: a message has the status of the highest mark at
// or above its seq. Marks never move back, and a mark that does not move sends no receipt.
TEST_F(messaging, status_and_receipts_are_watermarks) {
  auto alice = user("alice");
  auto bob = user("bob");
  alice.drain();
  bob.drain();
  std::uint64_t chat = 0;
  for (int i = 1; i <= 3; ++i) {
    const auto s = alice.send("bob", "w" + std::to_string(i));
    EXPECT_EQ(s.seq(), static_cast<std::uint64_t>(i));
    chat = s.chat_id();
  }
  for (int i = 1; i <= 3; ++i) {
    auto f = bob.next();
    ASSERT_TRUE(f.has_envelope()) << f.ShortDebugString();
    EXPECT_EQ(f.envelope().seq(), static_cast<std::uint64_t>(i));
  }

  // Delivered up to 2: messages 1 and 2 are delivered, 3 is only sent.
  bob.ack({{chat, 2}});
  auto r = single_receipt(alice.next());
  EXPECT_EQ(r.status(), v2::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(r.up_to_seq(), 2u);
  EXPECT_EQ(status_of(alice, chat, 1), v2::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(status_of(alice, chat, 2), v2::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(status_of(alice, chat, 3), v2::MESSAGE_STATUS_SENT);

  // Read up to 1.
  ASSERT_TRUE(bob.run(bob.api().mark_read(chat, 1)));
  r = single_receipt(alice.next());
  EXPECT_EQ(r.status(), v2::MESSAGE_STATUS_READ);
  EXPECT_EQ(r.up_to_seq(), 1u);
  EXPECT_EQ(status_of(alice, chat, 1), v2::MESSAGE_STATUS_READ);
  EXPECT_EQ(status_of(alice, chat, 2), v2::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(status_of(alice, chat, 3), v2::MESSAGE_STATUS_SENT);

  // Bob answers in the same chat: seq 4 is his, so alice cannot ask for its status, nor bob
  // for alice's messages; a seq above the head is nobody's.
  const auto reply = bob.send("alice", "w4");
  EXPECT_EQ(reply.chat_id(), chat);
  EXPECT_EQ(reply.seq(), 4u);
  auto f = alice.next();
  ASSERT_TRUE(f.has_envelope()) << f.ShortDebugString();
  EXPECT_EQ(f.envelope().seq(), 4u);
  EXPECT_EQ(f.envelope().from(), "bob");
  EXPECT_EQ(code_of(alice.run(alice.api().status(chat, 4))), v2::ERROR_CODE_NOT_FOUND);
  EXPECT_EQ(code_of(bob.run(bob.api().status(chat, 1))), v2::ERROR_CODE_NOT_FOUND);
  EXPECT_EQ(code_of(alice.run(alice.api().status(chat, 5))), v2::ERROR_CODE_NOT_FOUND);

  // Bob's cursor may cover his own message; marks up to the head cover all of alice's.
  bob.ack({{chat, 4}});
  r = single_receipt(alice.next());
  EXPECT_EQ(r.status(), v2::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(r.up_to_seq(), 4u);
  ASSERT_TRUE(bob.run(bob.api().mark_read(chat, 4)));
  r = single_receipt(alice.next());
  EXPECT_EQ(r.status(), v2::MESSAGE_STATUS_READ);
  EXPECT_EQ(r.up_to_seq(), 4u);
  for (std::uint64_t seq = 1; seq <= 3; ++seq)
    EXPECT_EQ(status_of(alice, chat, seq), v2::MESSAGE_STATUS_READ) << seq;

  // Older marks are accepted and change nothing: no receipt, no status moves back.
  bob.ack({{chat, 1}});
  ASSERT_TRUE(bob.run(bob.api().mark_read(chat, 2)));
  expect_quiet(alice);
  EXPECT_EQ(status_of(alice, chat, 3), v2::MESSAGE_STATUS_READ);

  // A mark above the head, or in a chat of others, is refused.
  EXPECT_EQ(code_of(bob.run(bob.api().mark_read(chat, 5))), v2::ERROR_CODE_INVALID_ARGUMENT);
  auto carol = user("carol");
  carol.drain();
  EXPECT_EQ(code_of(carol.run(carol.api().mark_read(chat, 1))), v2::ERROR_CODE_NOT_FOUND);
  EXPECT_EQ(code_of(carol.run(carol.api().status(chat, 1))), v2::ERROR_CODE_NOT_FOUND);
  expect_quiet(alice);
}

TEST_F(messaging, offline_queue_drains_in_order_across_pages) {
  auto alice = user("alice");
  auto bob = user("bob");
  bob.drain();
  bob.disconnect();
  const int n = 600;  // more than two drain pages of 256
  std::vector<v2::SendResult> sent;
  for (int i = 0; i < n; ++i) sent.push_back(alice.send("bob", "m" + std::to_string(i)));
  const auto chat = sent.front().chat_id();

  bob.reconnect();
  const auto got = test_client::envelopes_in(bob.drain());
  ASSERT_EQ(got.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(bob.drained, static_cast<std::uint64_t>(n));
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(got[i].payload(), "m" + std::to_string(i));
    EXPECT_EQ(got[i].message_id(), sent[i].message_id());
    EXPECT_EQ(got[i].chat_id(), chat);
    EXPECT_EQ(got[i].seq(), static_cast<std::uint64_t>(i + 1));
  }
  bob.ack({{chat, static_cast<std::uint64_t>(n)}});  // one cursor covers all of them
  bob.reconnect();
  EXPECT_TRUE(test_client::envelopes_in(bob.drain()).empty()) << "acked, yet pushed again";
  EXPECT_EQ(bob.drained, 0u);
}

TEST_F(messaging, unacked_messages_come_back_after_reconnect) {
  auto alice = user("alice");
  auto bob = user("bob");
  bob.drain();
  const auto sent = alice.send("bob", "first");
  auto f = bob.next();  // received, not acked
  ASSERT_TRUE(f.has_envelope());
  bob.reconnect();
  const auto again = test_client::envelopes_in(bob.drain());
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].payload(), "first");
  EXPECT_EQ(again[0].chat_id(), sent.chat_id());
  EXPECT_EQ(again[0].seq(), sent.seq());
  EXPECT_EQ(again[0].message_id(), sent.message_id());
}

// A sender who was away learns, right after authenticating, where the other member's
// watermarks are: after the drain's envelopes and before QueueEmpty.
TEST_F(messaging, receipts_reach_an_offline_sender) {
  auto alice = user("alice");
  auto bob = user("bob");
  alice.drain();
  bob.drain();
  bob.disconnect();
  const auto first = alice.send("bob", "while you were out");
  const auto second = alice.send("bob", "and another");
  const auto chat = first.chat_id();
  alice.disconnect();

  bob.reconnect();
  ASSERT_EQ(test_client::envelopes_in(bob.drain()).size(), 2u);
  EXPECT_EQ(bob.send("alice", "welcome back").seq(), 3u);
  bob.ack({{chat, 3}});
  ASSERT_TRUE(bob.run(bob.api().mark_read(chat, first.seq())));

  alice.reconnect();
  const auto frames = alice.drain();
  ASSERT_FALSE(frames.empty());
  ASSERT_TRUE(frames[0].has_envelope()) << frames[0].ShortDebugString();
  EXPECT_EQ(frames[0].envelope().payload(), "welcome back");
  EXPECT_EQ(frames[0].envelope().seq(), 3u);
  EXPECT_EQ(alice.drained, 1u);
  for (std::size_t i = 1; i < frames.size(); ++i)
    EXPECT_TRUE(frames[i].has_receipts())
        << "after the envelopes: " << frames[i].ShortDebugString();
  std::map<v2::MessageStatus, std::uint64_t> marks;  // bob's, in the chat
  for (const auto& r : test_client::receipts_in(frames)) {
    EXPECT_EQ(r.user(), "bob") << "a receipt of one's own watermark";
    EXPECT_EQ(r.chat_id(), chat);
    EXPECT_TRUE(marks.emplace(r.status(), r.up_to_seq()).second)
        << "twice: " << r.ShortDebugString();
  }
  EXPECT_EQ(marks[v2::MESSAGE_STATUS_DELIVERED], 3u);
  EXPECT_EQ(marks[v2::MESSAGE_STATUS_READ], 1u);
  EXPECT_EQ(marks.size(), 2u);
  EXPECT_EQ(status_of(alice, chat, first.seq()), v2::MESSAGE_STATUS_READ);
  EXPECT_EQ(status_of(alice, chat, second.seq()), v2::MESSAGE_STATUS_DELIVERED);
}

// Receipts are current values, not events: however many acks moved a watermark, a returning
// sender gets one Receipt per chat, member and status, and again at every login (they need no
// ack).
TEST_F(messaging, a_returning_sender_gets_current_watermarks_not_a_backlog) {
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  auto carol = online(io, server.url(), "carol");
  std::uint64_t with_bob = 0, with_carol = 0;
  for (int i = 0; i < 50; ++i) with_bob = alice.send("bob", "b" + std::to_string(i)).chat_id();
  for (int i = 0; i < 3; ++i) with_carol = alice.send("carol", "c" + std::to_string(i)).chat_id();
  alice.disconnect();

  // Bob stores and acks them one by one, and reads them ten at a time.
  for (std::uint64_t seq = 1; seq <= 50; ++seq) {
    auto f = bob.next();
    ASSERT_TRUE(f.has_envelope()) << f.ShortDebugString();
    ASSERT_EQ(f.envelope().seq(), seq);
    bob.ack({test_client::cursor_of(f.envelope())});
    if (seq % 10 == 0) {
      ASSERT_TRUE(bob.run(bob.api().mark_read(with_bob, seq)));
    }
  }
  // Carol acks her three at once and reads none.
  std::vector<v2::Frame> carols;
  for (int i = 0; i < 3; ++i) carols.push_back(carol.next());
  ASSERT_EQ(test_client::envelopes_in(carols).size(), 3u);
  carol.ack_all(carols);

  using key = std::tuple<std::uint64_t, std::string, int>;  // chat, member, status
  for (int login = 0; login < 2; ++login) {
    SCOPED_TRACE("login " + std::to_string(login));
    alice.reconnect();
    const auto frames = alice.drain();
    EXPECT_TRUE(test_client::envelopes_in(frames).empty());
    std::map<key, int> count;
    std::map<key, std::uint64_t> up_to;
    for (const auto& r : test_client::receipts_in(frames)) {
      const key k{r.chat_id(), r.user(), r.status()};
      ++count[k];
      up_to[k] = r.up_to_seq();
    }
    for (const auto& [k, n] : count) {
      EXPECT_EQ(n, 1) << "chat " << std::get<0>(k) << ", " << std::get<1>(k) << ", status "
                      << std::get<2>(k);
    }
    EXPECT_EQ(count.size(), 3u);  // bob delivered and read, carol delivered
    EXPECT_EQ((up_to[{with_bob, "bob", v2::MESSAGE_STATUS_DELIVERED}]), 50u);
    EXPECT_EQ((up_to[{with_bob, "bob", v2::MESSAGE_STATUS_READ}]), 50u);
    EXPECT_EQ((up_to[{with_carol, "carol", v2::MESSAGE_STATUS_DELIVERED}]), 3u);
    alice.disconnect();
  }
}

// A device that presents the receipts stamp it kept (the last QueueEmpty's, raised by the live
// Receipts after it) is sent after login only the watermarks that moved after it, with their
// current values; without a stamp, all of them.
TEST_F(messaging, a_login_with_its_receipts_stamp_gets_only_what_moved) {
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  auto carol = online(io, server.url(), "carol");
  EXPECT_GT(alice.receipts_stamp, 0u);
  const auto with_bob = alice.send("bob", "hi bob").chat_id();
  const auto with_carol = alice.send("carol", "hi carol").chat_id();
  ASSERT_TRUE(bob.next().has_envelope());
  ASSERT_TRUE(carol.next().has_envelope());
  bob.ack({{with_bob, 1}});
  const auto from_bob = alice.next();
  EXPECT_EQ(single_receipt(from_bob).chat_id(), with_bob);
  EXPECT_GT(from_bob.receipts().stamp(), alice.receipts_stamp) << "live receipts carry stamps";
  carol.ack({{with_carol, 1}});
  const auto from_carol = alice.next();
  EXPECT_EQ(single_receipt(from_carol).chat_id(), with_carol);
  EXPECT_GT(from_carol.receipts().stamp(), from_bob.receipts().stamp());
  alice.disconnect();

  // While alice is away, bob reads: her next login lists bob's chat only, current values.
  ASSERT_TRUE(bob.run(bob.api().mark_read(with_bob, 1)));
  alice.receipts_since = from_carol.receipts().stamp();
  alice.reconnect();
  std::set<std::tuple<std::uint64_t, std::string, int, std::uint64_t>> got;
  for (const auto& r : test_client::receipts_in(alice.drain()))
    got.emplace(r.chat_id(), r.user(), r.status(), r.up_to_seq());
  EXPECT_EQ(got, (std::set<std::tuple<std::uint64_t, std::string, int, std::uint64_t>>{
                     {with_bob, "bob", v2::MESSAGE_STATUS_DELIVERED, 1},
                     {with_bob, "bob", v2::MESSAGE_STATUS_READ, 1}}));
  EXPECT_GE(alice.receipts_stamp, alice.receipts_since);
  alice.disconnect();

  // With the stamp of that login: nothing moved.
  alice.receipts_since = alice.receipts_stamp;
  alice.reconnect();
  EXPECT_TRUE(test_client::receipts_in(alice.drain()).empty());
  alice.disconnect();

  // Without a stamp: everything.
  alice.receipts_since = 0;
  alice.reconnect();
  EXPECT_EQ(test_client::receipts_in(alice.drain()).size(), 3u);
}

TEST_F(messaging, one_ack_moves_the_cursors_of_several_chats) {
  auto bob = user("bob");
  bob.drain();
  bob.disconnect();
  auto alice = user("alice");
  auto carol = user("carol");
  auto dave = user("dave");
  std::map<std::string, std::uint64_t> chat;
  std::map<std::string, std::uint64_t> head;
  for (auto* sender : {&alice, &carol, &dave}) sender->drain();
  for (int i = 0; i < 5; ++i) chat["alice"] = alice.send("bob", "a" + std::to_string(i)).chat_id();
  for (int i = 0; i < 3; ++i) chat["carol"] = carol.send("bob", "c" + std::to_string(i)).chat_id();
  for (int i = 0; i < 2; ++i) chat["dave"] = dave.send("bob", "d" + std::to_string(i)).chat_id();
  head = {{"alice", 5}, {"carol", 3}, {"dave", 2}};
  EXPECT_EQ((std::set<std::uint64_t>{chat["alice"], chat["carol"], chat["dave"]}.size()), 3u);

  bob.reconnect();
  const auto got = bob.drain();
  const auto envelopes = test_client::envelopes_in(got);
  ASSERT_EQ(envelopes.size(), 10u);
  std::map<std::uint64_t, std::uint64_t> last;  // per chat: seq order within each chat
  for (const auto& e : envelopes) {
    EXPECT_EQ(e.seq(), last[e.chat_id()] + 1) << e.ShortDebugString();
    last[e.chat_id()] = e.seq();
  }
  const auto cursors = test_client::cursors_of(got);
  ASSERT_EQ(cursors.size(), 3u);
  bob.ack(cursors);  // one Ack frame, three chats

  // Each sender is told at once.
  for (auto* sender : {&alice, &carol, &dave}) {
    const auto r = single_receipt(sender->next());
    EXPECT_EQ(r.chat_id(), chat[sender->username]);
    EXPECT_EQ(r.user(), "bob");
    EXPECT_EQ(r.status(), v2::MESSAGE_STATUS_DELIVERED);
    EXPECT_EQ(r.up_to_seq(), head[sender->username]);
  }
  bob.reconnect();
  EXPECT_TRUE(test_client::envelopes_in(bob.drain()).empty()) << "an acked message came again";

  // An ack at or below a cursor is accepted and changes nothing: no receipt, and after a
  // reconnect nothing comes again.
  bob.ack({{chat["alice"], 2}, {chat["carol"], 3}});
  expect_quiet(alice);
  expect_quiet(carol);
  bob.reconnect();
  EXPECT_TRUE(test_client::envelopes_in(bob.drain()).empty()) << "a cursor moved back";

  // A chat named twice in one Ack counts at its highest seq.
  EXPECT_EQ(alice.send("bob", "a5").seq(), 6u);
  auto f = bob.next();
  ASSERT_TRUE(f.has_envelope()) << f.ShortDebugString();
  bob.ack({{chat["alice"], 6}, {chat["alice"], 1}});
  const auto r = single_receipt(alice.next());
  EXPECT_EQ(r.up_to_seq(), 6u);
  bob.reconnect();
  EXPECT_TRUE(test_client::envelopes_in(bob.drain()).empty());

  // A device's cursor may cover the messages it sent itself.
  alice.ack({{chat["alice"], 6}});
}

// Ack is all or nothing: one bad entry refuses the whole frame, and the chats of the good
// entries are pushed again after a reconnect.
TEST_F(messaging, an_ack_with_one_bad_entry_applies_nothing) {
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  auto carol = online(io, server.url(), "carol");
  std::uint64_t with_alice = 0, with_carol = 0;
  for (int i = 0; i < 3; ++i) with_alice = alice.send("bob", "a" + std::to_string(i)).chat_id();
  for (int i = 0; i < 2; ++i) with_carol = carol.send("bob", "c" + std::to_string(i)).chat_id();
  const auto elsewhere = alice.send("carol", "not for bob").chat_id();  // bob is not in it
  ASSERT_TRUE(carol.next().has_envelope());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(bob.next().has_envelope());

  // A seq above its chat's head.
  EXPECT_EQ(code_of(bob.run(bob.api().ack({{with_alice, 3}, {with_carol, 3}}))),
            v2::ERROR_CODE_INVALID_ARGUMENT);
  // A chat bob is not a member of, or no chat at all.
  EXPECT_EQ(code_of(bob.run(bob.api().ack({{with_alice, 3}, {with_carol, 2}, {elsewhere, 1}}))),
            v2::ERROR_CODE_NOT_FOUND);
  EXPECT_EQ(code_of(bob.run(bob.api().ack({{with_alice, 3}, {(1ull << 62) + 12345, 1}}))),
            v2::ERROR_CODE_NOT_FOUND);
  // Without a request id, the error still comes (as a push).
  bob.api().ack_async({{with_alice, 3}, {with_carol, 9}});
  const auto pushed = bob.next();
  ASSERT_TRUE(pushed.has_error()) << pushed.ShortDebugString();
  EXPECT_EQ(pushed.request_id(), 0u);
  EXPECT_EQ(pushed.error().code(), v2::ERROR_CODE_INVALID_ARGUMENT);

  // Nothing moved: no receipts, and everything comes again.
  expect_quiet(alice);
  expect_quiet(carol);
  bob.reconnect();
  std::map<std::uint64_t, int> per_chat;
  for (const auto& e : test_client::envelopes_in(bob.drain())) ++per_chat[e.chat_id()];
  EXPECT_EQ(per_chat[with_alice], 3);
  EXPECT_EQ(per_chat[with_carol], 2);
  EXPECT_EQ(per_chat.size(), 2u);
}

TEST_F(messaging, retried_send_is_not_duplicated) {
  auto alice = user("alice");
  auto bob = user("bob");
  bob.drain();
  const auto first = alice.send("bob", "once", "retry-me");
  const auto second = alice.send("bob", "once", "retry-me");
  EXPECT_EQ(first.message_id(), second.message_id());
  EXPECT_EQ(first.chat_id(), second.chat_id());
  EXPECT_EQ(first.seq(), second.seq());
  EXPECT_EQ(first.sent_at_ms(), second.sent_at_ms());
  EXPECT_FALSE(first.duplicate());
  EXPECT_TRUE(second.duplicate());
  ASSERT_TRUE(bob.next().has_envelope());
  auto more = bob.run(bob.api().next_push(300ms));
  EXPECT_FALSE(more) << "a second copy arrived";
  // The retry took no place in the log: the next message is seq 2.
  EXPECT_EQ(alice.send("bob", "next", "another-id").seq(), first.seq() + 1);
}

TEST_F(messaging, kill_9_between_sent_and_delivery_loses_nothing) {
  auto alice = user("alice");
  auto bob = user("bob");
  bob.drain();
  bob.disconnect();
  std::vector<v2::SendResult> sent;
  for (int i = 0; i < 50; ++i) sent.push_back(alice.send("bob", "durable " + std::to_string(i)));

  server.kill9();  // every ✓ above was fsync'd before it was sent
  server.restart();

  test_client bob2(io, server.url());
  bob2.login_as(bob);
  const auto got = test_client::envelopes_in(bob2.drain());
  ASSERT_EQ(got.size(), sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(got[i].message_id(), sent[i].message_id());
    EXPECT_EQ(got[i].chat_id(), sent[i].chat_id());
    EXPECT_EQ(got[i].seq(), sent[i].seq());
  }

  // Ids and the chat's seq go on after the restart.
  test_client alice2(io, server.url());
  alice2.login_as(alice);
  const auto after = alice2.send("bob", "after", "after-restart");
  EXPECT_GT(after.message_id(), sent.back().message_id());
  EXPECT_EQ(after.chat_id(), sent.back().chat_id());
  EXPECT_EQ(after.seq(), sent.back().seq() + 1);
}

TEST_F(messaging, live_pushes_during_a_drain_are_neither_lost_nor_duplicated) {
  auto alice = user("alice");
  auto bob = user("bob");
  bob.drain();
  bob.disconnect();
  for (int i = 0; i < 300; ++i) alice.send("bob", "queued " + std::to_string(i));

  // Bob reconnects while alice keeps sending (pipelined, without waiting for each ✓; 200 stays
  // under the 256 requests a connection may have in flight).
  bob.connect();
  auto login = bob.api().authenticate(bob.device_id, bob.token);
  std::vector<std::future<client::result<v2::SendResult>>> sends;
  for (int i = 0; i < 200; ++i) {
    sends.push_back(boost::asio::co_spawn(
        io, alice.api().send("bob", "live-" + std::to_string(i), "live-" + std::to_string(i)),
        boost::asio::use_future));
  }
  ASSERT_TRUE(bob.run(std::move(login)));
  for (auto& s : sends) {
    while (s.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      io.restart();
      io.run_one_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(s.get());
  }
  std::vector<std::string> got;
  std::uint64_t last_seq = 0;
  std::uint64_t drained = 0;
  while (got.size() < 500) {
    auto f = bob.run(bob.api().next_push(std::chrono::seconds(10)));
    ASSERT_TRUE(f) << "after " << got.size() << " messages";
    if (f->has_queue_empty()) {
      drained = f->queue_empty().drained();
      continue;
    }
    if (f->has_receipts()) continue;
    ASSERT_TRUE(f->has_envelope()) << f->ShortDebugString();
    // One chat reaches a connection in seq order: a seq again is a duplicate, a gap a loss.
    ASSERT_EQ(f->envelope().seq(), last_seq + 1)
        << (f->envelope().seq() <= last_seq ? "duplicate" : "skipped");
    last_seq = f->envelope().seq();
    got.push_back(f->envelope().payload());
  }
  // Order: the queued ones first, then the live ones in the order they were sent.
  for (int i = 0; i < 300; ++i) EXPECT_EQ(got[i], "queued " + std::to_string(i));
  for (int i = 0; i < 200; ++i) EXPECT_EQ(got[300 + i], "live-" + std::to_string(i));
  auto extra = bob.run(bob.api().next_push(300ms));
  while (extra && (extra->has_queue_empty() || extra->has_receipts())) {
    if (extra->has_queue_empty()) drained = extra->queue_empty().drained();
    extra = bob.run(bob.api().next_push(300ms));
  }
  EXPECT_FALSE(extra) << extra->ShortDebugString();
  // The drain pushed at least what was queued when it started.
  EXPECT_GE(drained, 300u);
  EXPECT_LE(drained, 500u);
}

// A device that keeps coming and going while a chat keeps growing: every connection starts
// right above its cursor and goes on in seq order, so the application is given each message
// exactly once (the ones it acked never again, the ones it did not ack again).
TEST_F(messaging, reconnects_while_messages_keep_arriving_deliver_each_once) {
  auto bob = user("bob");
  bob.drain();
  boost::asio::io_context alice_io;  // alice sends from a thread of her own
  test_client alice(alice_io, server.url());
  alice.register_and_login("alice");
  alice.drain();
  const std::uint64_t n = 400;
  std::jthread sender([&](std::stop_token stop) {
    for (std::uint64_t i = 1; i <= n && !stop.stop_requested(); ++i) {
      alice.send("bob", "m" + std::to_string(i));
      if (i % 25 == 0) std::this_thread::sleep_for(20ms);  // spread over bob's reconnects
    }
  });

  std::uint64_t chat = 0;
  std::uint64_t acked = 0;  // bob's cursor: what the application has stored
  int connections = 0;
  const auto deadline = std::chrono::steady_clock::now() + 90s;
  while (acked < n && std::chrono::steady_clock::now() < deadline) {
    bob.reconnect();
    ++connections;
    const bool keeps = connections % 4 != 0;  // every fourth visit ends without an ack
    const std::uint64_t take = 5 + (static_cast<std::uint64_t>(connections) * 7) % 40;
    std::uint64_t last = acked;
    while (last < acked + take && last < n) {
      auto f = bob.run(bob.api().next_push(10s));
      ASSERT_TRUE(f) << "connection " << connections << ", after seq " << last << ": "
                     << client::describe(f.error());
      if (!f->has_envelope()) continue;  // QueueEmpty, Receipts
      const auto& e = f->envelope();
      if (chat == 0) chat = e.chat_id();
      ASSERT_EQ(e.chat_id(), chat);
      ASSERT_EQ(e.seq(), last + 1) << "connection " << connections << ": "
                                   << (e.seq() <= last ? "delivered twice" : "skipped");
      ASSERT_EQ(e.payload(), "m" + std::to_string(e.seq()));
      last = e.seq();
    }
    if (keeps) {
      bob.ack({{chat, last}});
      acked = last;
      bob.disconnect();
    } else {
      bob.api().abort();  // gone without a word: the unacked ones come again
    }
  }
  sender.join();
  EXPECT_EQ(acked, n);
  EXPECT_GT(connections, 5);
  bob.reconnect();
  EXPECT_TRUE(test_client::envelopes_in(bob.drain()).empty());
}

TEST_F(messaging, history_pages_newest_first) {
  auto alice = user("alice");
  auto bob = user("bob");
  // No chat yet: an empty page.
  auto none = alice.run(alice.api().history("bob", 0, 10));
  ASSERT_TRUE(none) << client::describe(none.error());
  EXPECT_EQ(none->chat_id(), 0u);
  EXPECT_EQ(none->messages_size(), 0);

  std::uint64_t chat = 0;
  for (int i = 0; i < 5; ++i) chat = alice.send("bob", "h" + std::to_string(i)).chat_id();
  auto page = alice.run(alice.api().history("bob", 0, 3));
  ASSERT_TRUE(page) << client::describe(page.error());
  EXPECT_EQ(page->chat_id(), chat);
  ASSERT_EQ(page->messages_size(), 3);
  EXPECT_EQ(page->messages(0).payload(), "h4");
  EXPECT_EQ(page->messages(0).seq(), 5u);
  EXPECT_EQ(page->messages(2).payload(), "h2");
  EXPECT_EQ(page->messages(2).seq(), 3u);
  auto older = bob.run(bob.api().history("alice", page->messages(2).seq(), 10));
  ASSERT_TRUE(older) << client::describe(older.error());
  EXPECT_EQ(older->chat_id(), chat);
  ASSERT_EQ(older->messages_size(), 2);
  EXPECT_EQ(older->messages(0).payload(), "h1");
  EXPECT_EQ(older->messages(0).seq(), 2u);
  EXPECT_EQ(older->messages(1).from(), "alice");
  EXPECT_EQ(older->messages(1).chat_id(), chat);
  EXPECT_EQ(older->messages(1).seq(), 1u);

  // By chat id the same log; limit 0 means the default (50).
  auto all = bob.run(bob.api().history_of_chat(chat, 0, 0));
  ASSERT_TRUE(all) << client::describe(all.error());
  ASSERT_EQ(all->messages_size(), 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(all->messages(i).seq(), static_cast<std::uint64_t>(5 - i));

  // Not a member: NOT_FOUND. Over 100 a page: INVALID_ARGUMENT.
  auto carol = user("carol");
  EXPECT_EQ(code_of(carol.run(carol.api().history_of_chat(chat, 0, 10))), v2::ERROR_CODE_NOT_FOUND);
  EXPECT_EQ(code_of(alice.run(alice.api().history("bob", 0, 101))),
            v2::ERROR_CODE_INVALID_ARGUMENT);
}

// A page holds at most 512 KiB of payload whatever its limit, so that it fits the client's
// frame limit (1 MiB); paging with before_seq still reaches every message once.
TEST_F(messaging, history_pages_are_bounded_by_bytes) {
  auto alice = user("alice");
  auto bob = user("bob");
  const std::uint64_t n = 20;
  const std::size_t size = 60 * 1024;
  const auto payload = [&](std::uint64_t seq) {
    std::string p = std::to_string(seq) + ":";
    p.resize(size, static_cast<char>('a' + seq % 26));
    return p;
  };
  for (std::uint64_t seq = 1; seq <= n; ++seq) {
    ASSERT_EQ(alice.send("bob", payload(seq)).seq(), seq);
  }

  std::set<std::uint64_t> seen;
  std::uint64_t before = 0;
  for (int pages = 1;; ++pages) {
    ASSERT_LE(pages, static_cast<int>(n) + 1) << "paging does not end";
    auto page = bob.run(bob.api().history("alice", before, 100));
    // A page over the client's frame limit would have closed the connection.
    ASSERT_TRUE(page) << "page " << pages << ": " << client::describe(page.error());
    if (page->messages_size() == 0) break;
    v2::Frame as_sent;
    *as_sent.mutable_history() = *page;
    EXPECT_LE(as_sent.ByteSizeLong(), 1024u * 1024);
    std::size_t bytes = 0;
    std::uint64_t previous = before == 0 ? n + 1 : before;
    for (const auto& m : page->messages()) {
      bytes += m.payload().size();
      EXPECT_LT(m.seq(), previous) << "not newest first";
      previous = m.seq();
      EXPECT_TRUE(seen.insert(m.seq()).second) << "seq " << m.seq() << " twice";
      EXPECT_EQ(m.payload(), payload(m.seq()));
    }
    EXPECT_LE(bytes, 512u * 1024) << "page " << pages;
    if (pages == 1) {
      EXPECT_EQ(page->messages(0).seq(), n);
      EXPECT_LT(page->messages_size(), static_cast<int>(n)) << "the limit of 100 was the bound";
    }
    before = page->messages(page->messages_size() - 1).seq();
  }
  EXPECT_EQ(seen.size(), n);
  EXPECT_EQ(*seen.begin(), 1u);
  EXPECT_EQ(*seen.rbegin(), n);
}

TEST_F(messaging, presence_and_typing) {
  auto bob = user("bob");
  bob.drain();
  auto alice = online(io, server.url(), "alice");
  auto carol = online(io, server.url(), "carol");

  // Strangers see nothing: no presence, and typing is refused.
  ASSERT_TRUE(carol.run(carol.api().subscribe_presence({"alice", "nobody_at_all"})));
  carol.api().typing("bob", true);
  auto refused = carol.next();
  ASSERT_TRUE(refused.has_error()) << refused.ShortDebugString();
  EXPECT_EQ(refused.error().code(), v2::ERROR_CODE_NO_SHARED_CHAT);

  // One message makes a chat: presence and typing pass between its members from then on.
  alice.send("bob", "hello");
  ASSERT_TRUE(bob.next().has_envelope());
  ASSERT_TRUE(bob.run(bob.api().subscribe_presence({"alice"})));
  auto now = bob.next();
  ASSERT_TRUE(now.has_presence());
  EXPECT_TRUE(now.presence().online());
  EXPECT_EQ(now.presence().last_seen_ms(), 0u);  // online: no last seen

  alice.api().typing("bob", true);
  auto typing = bob.next();
  ASSERT_TRUE(typing.has_typing_event());
  EXPECT_EQ(typing.typing_event().from(), "alice");
  EXPECT_TRUE(typing.typing_event().typing());

  alice.disconnect();
  auto gone = bob.next();
  ASSERT_TRUE(gone.has_presence());
  EXPECT_FALSE(gone.presence().online());
  EXPECT_GT(gone.presence().last_seen_ms(), 0u);
  EXPECT_EQ(gone.presence().last_seen_ms() % 60'000, 0u) << "last seen is rounded to the minute";
  EXPECT_LE(gone.presence().last_seen_ms(), now_ms());
  EXPECT_GT(gone.presence().last_seen_ms() + 60'000, now_ms() - 30'000);

  // Carol never heard of alice's comings and goings.
  auto nothing = carol.run(carol.api().next_push(std::chrono::milliseconds(300)));
  EXPECT_FALSE(nothing) << nothing->ShortDebugString();
}

TEST_F(messaging, hidden_last_seen_is_shown_to_nobody) {
  auto bob = user("bob");
  bob.drain();
  auto alice = user("alice");
  alice.drain();
  ASSERT_TRUE(alice.run(alice.api().set_privacy(true)));
  alice.send("bob", "hi");
  ASSERT_TRUE(bob.next().has_envelope());
  ASSERT_TRUE(bob.run(bob.api().subscribe_presence({"alice"})));
  ASSERT_TRUE(bob.next().has_presence());
  alice.disconnect();
  auto gone = bob.next();
  ASSERT_TRUE(gone.has_presence());
  EXPECT_FALSE(gone.presence().online());
  EXPECT_EQ(gone.presence().last_seen_ms(), 0u);
  EXPECT_TRUE(gone.presence().last_seen_hidden());

  // The setting is stored: the next login reports it, and a restart keeps it.
  server.restart();
  test_client again(io, server.url());
  again.login_as(alice);
  EXPECT_TRUE(again.authenticated.hide_last_seen());
}

TEST_F(messaging, a_message_to_yourself_is_refused) {
  auto alice = user("alice");
  alice.drain();
  auto r = alice.run(alice.api().send("alice", "self-1", "note to self"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, v2::ERROR_CODE_INVALID_ARGUMENT);
  EXPECT_NE(r.error().message.find("yourself"), std::string::npos) << r.error().message;
  // Nothing was stored: the next connection drains nothing, and there is no chat.
  alice.reconnect();
  EXPECT_TRUE(alice.drain().empty());
  auto history = alice.run(alice.api().history("alice", 0, 10));
  EXPECT_TRUE(!history || history->messages_size() == 0);
}

TEST_F(messaging, a_second_connection_of_a_device_replaces_the_first) {
  auto alice = user("alice");
  alice.drain();
  test_client again(io, server.url());
  again.login_as(alice);
  EXPECT_TRUE(again.drain().empty());
  auto f = alice.run(alice.api().next_push(std::chrono::seconds(5)));
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().what, client::client_error::kind::closed);
}

TEST_F(messaging, healthz_and_metrics) {
  EXPECT_EQ(http_get(server.port(), "/healthz"), "ok\n");
  auto alice = user("alice");
  auto bob = user("bob");
  alice.send("bob", "counted");
  const auto metrics = http_get(server.port(), "/metrics");
  EXPECT_NE(metrics.find("parley_messages_stored_total 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("parley_connections 2\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("parley_store_write_seconds_count"), std::string::npos);
}

TEST_F(messaging, sigterm_shuts_down_cleanly) {
  auto alice = user("alice");
  const int status = server.terminate();
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  server.restart();
}

}  // namespace
}  // namespace parley::test
