// End-to-end delivery through a real parleyd: online and offline delivery, receipts, retries,
// crash safety, history, presence and typing.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <set>

#include "common/clock.hpp"
#include "test_client.hpp"

namespace parley::test {
namespace {

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

TEST_F(messaging, online_delivery_with_delivered_and_read_receipts) {
  auto alice = user("alice");
  auto bob = user("bob");
  EXPECT_TRUE(alice.drain().empty());
  EXPECT_TRUE(bob.drain().empty());

  const auto sent = alice.send("bob", "hello bob");
  ASSERT_NE(sent.message_id(), 0u);
  EXPECT_EQ(sent.seq(), 1u);

  auto f = bob.next();
  ASSERT_TRUE(f.has_envelope());
  EXPECT_EQ(f.envelope().payload(), "hello bob");
  EXPECT_EQ(f.envelope().from(), "alice");
  EXPECT_EQ(f.envelope().message_id(), sent.message_id());
  EXPECT_EQ(*alice.run(alice.api().status(sent.message_id())), v1::MESSAGE_STATUS_SENT);

  bob.ack({f.envelope().event_id()});
  auto delivered = alice.next();
  ASSERT_TRUE(delivered.has_receipt());
  EXPECT_EQ(delivered.receipt().status(), v1::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(delivered.receipt().message_id(), sent.message_id());
  EXPECT_EQ(delivered.receipt().peer(), "bob");
  EXPECT_EQ(*alice.run(alice.api().status(sent.message_id())), v1::MESSAGE_STATUS_DELIVERED);

  ASSERT_TRUE(bob.run(bob.api().mark_read("alice", sent.message_id())));
  auto read = alice.next();
  ASSERT_TRUE(read.has_receipt());
  EXPECT_EQ(read.receipt().status(), v1::MESSAGE_STATUS_READ);
  EXPECT_EQ(*alice.run(alice.api().status(sent.message_id())), v1::MESSAGE_STATUS_READ);
}

TEST_F(messaging, offline_queue_drains_in_order_across_pages) {
  auto alice = user("alice");
  auto bob = user("bob");
  bob.drain();
  bob.disconnect();
  const int n = 600;  // more than two drain pages of 256
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < n; ++i)
    ids.push_back(alice.send("bob", "m" + std::to_string(i)).message_id());

  bob.reconnect();
  auto got = bob.drain();
  ASSERT_EQ(got.size(), static_cast<std::size_t>(n));
  std::vector<std::uint64_t> events;
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(got[i].has_envelope());
    EXPECT_EQ(got[i].envelope().payload(), "m" + std::to_string(i));
    EXPECT_EQ(got[i].envelope().message_id(), ids[i]);
    EXPECT_EQ(got[i].envelope().seq(), static_cast<std::uint64_t>(i + 1));
    events.push_back(got[i].envelope().event_id());
  }
  bob.ack(events);
  bob.reconnect();
  EXPECT_TRUE(bob.drain().empty());  // acked: gone from the queue
}

TEST_F(messaging, unacked_messages_come_back_after_reconnect) {
  auto alice = user("alice");
  auto bob = user("bob");
  bob.drain();
  alice.send("bob", "first");
  ASSERT_TRUE(bob.next().has_envelope());  // received, not acked
  bob.reconnect();
  auto again = bob.drain();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].envelope().payload(), "first");
}

TEST_F(messaging, receipts_reach_an_offline_sender) {
  auto alice = user("alice");
  auto bob = user("bob");
  alice.drain();
  bob.drain();
  bob.disconnect();
  const auto sent = alice.send("bob", "while you were out");
  alice.disconnect();

  bob.reconnect();
  auto got = bob.drain();
  ASSERT_EQ(got.size(), 1u);
  bob.ack({got[0].envelope().event_id()});
  ASSERT_TRUE(bob.run(bob.api().mark_read("alice", sent.message_id())));

  alice.reconnect();
  auto receipts = alice.drain();
  ASSERT_EQ(receipts.size(), 2u);
  EXPECT_EQ(receipts[0].receipt().status(), v1::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(receipts[1].receipt().status(), v1::MESSAGE_STATUS_READ);
  EXPECT_EQ(receipts[1].receipt().message_id(), sent.message_id());
}

TEST_F(messaging, retried_send_is_not_duplicated) {
  auto alice = user("alice");
  auto bob = user("bob");
  bob.drain();
  const auto first = alice.send("bob", "once", "retry-me");
  const auto second = alice.send("bob", "once", "retry-me");
  EXPECT_EQ(first.message_id(), second.message_id());
  EXPECT_FALSE(first.duplicate());
  EXPECT_TRUE(second.duplicate());
  ASSERT_TRUE(bob.next().has_envelope());
  auto more = bob.run(bob.api().next_push(std::chrono::milliseconds(300)));
  EXPECT_FALSE(more) << "a second copy arrived";
}

TEST_F(messaging, kill_9_between_sent_and_delivery_loses_nothing) {
  auto alice = user("alice");
  auto bob = user("bob");
  bob.drain();
  bob.disconnect();
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 50; ++i)
    ids.push_back(alice.send("bob", "durable " + std::to_string(i)).message_id());

  server.kill9();  // every ✓ above was fsync'd before it was sent
  server.restart();

  test_client bob2(io, server.url());
  bob2.device_id = bob.device_id;
  bob2.token = bob.token;
  bob2.reconnect();
  auto got = bob2.drain();
  ASSERT_EQ(got.size(), ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(got[i].envelope().message_id(), ids[i]);

  // Ids keep increasing after the restart.
  test_client alice2(io, server.url());
  alice2.device_id = alice.device_id;
  alice2.token = alice.token;
  alice2.reconnect();
  EXPECT_GT(alice2.send("bob", "after", "after-restart").message_id(), ids.back());
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
  std::vector<std::future<client::result<v1::SendResult>>> sends;
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
  std::set<std::uint64_t> seen;
  while (got.size() < 500) {
    auto f = bob.run(bob.api().next_push(std::chrono::seconds(10)));
    ASSERT_TRUE(f) << "after " << got.size() << " messages";
    if (f->has_queue_empty()) continue;
    ASSERT_TRUE(f->has_envelope());
    ASSERT_TRUE(seen.insert(f->envelope().message_id()).second) << "duplicate";
    got.push_back(f->envelope().payload());
  }
  // Order: the queued ones first, then the live ones in the order they were sent.
  for (int i = 0; i < 300; ++i) EXPECT_EQ(got[i], "queued " + std::to_string(i));
  for (int i = 0; i < 200; ++i) EXPECT_EQ(got[300 + i], "live-" + std::to_string(i));
  auto extra = bob.run(bob.api().next_push(std::chrono::milliseconds(300)));
  EXPECT_TRUE(!extra || extra->has_queue_empty());
}

TEST_F(messaging, history_pages_newest_first) {
  auto alice = user("alice");
  auto bob = user("bob");
  for (int i = 0; i < 5; ++i) alice.send("bob", "h" + std::to_string(i));
  auto page = alice.run(alice.api().history("bob", 0, 3));
  ASSERT_TRUE(page);
  ASSERT_EQ(page->messages_size(), 3);
  EXPECT_EQ(page->messages(0).payload(), "h4");
  EXPECT_EQ(page->messages(2).payload(), "h2");
  auto older = bob.run(bob.api().history("alice", page->messages(2).message_id(), 10));
  ASSERT_TRUE(older);
  ASSERT_EQ(older->messages_size(), 2);
  EXPECT_EQ(older->messages(0).payload(), "h1");
  EXPECT_EQ(older->messages(1).from(), "alice");
}

TEST_F(messaging, presence_and_typing) {
  auto bob = user("bob");
  bob.drain();
  test_client alice(io, server.url());
  alice.register_and_login("alice");
  alice.drain();
  test_client carol(io, server.url());
  carol.register_and_login("carol");
  carol.drain();

  // Strangers see nothing: no presence, and typing is refused.
  ASSERT_TRUE(carol.run(carol.api().subscribe_presence({"alice", "nobody_at_all"})));
  carol.api().typing("bob", true);
  auto refused = carol.next();
  ASSERT_TRUE(refused.has_error()) << refused.ShortDebugString();
  EXPECT_EQ(refused.error().code(), v1::ERROR_CODE_NO_SHARED_CHAT);

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
  again.device_id = alice.device_id;
  again.token = alice.token;
  again.reconnect();
  EXPECT_TRUE(again.authenticated.hide_last_seen());
}

TEST_F(messaging, a_message_to_yourself_is_refused) {
  auto alice = user("alice");
  alice.drain();
  auto r = alice.run(alice.api().send("alice", "self-1", "note to self"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, v1::ERROR_CODE_INVALID_ARGUMENT);
  EXPECT_NE(r.error().message.find("yourself"), std::string::npos) << r.error().message;
  // Nothing was queued: the next connection drains nothing.
  alice.reconnect();
  EXPECT_TRUE(alice.drain().empty());
}

TEST_F(messaging, a_second_connection_of_a_device_replaces_the_first) {
  auto alice = user("alice");
  alice.drain();
  test_client again(io, server.url());
  again.device_id = alice.device_id;
  again.token = alice.token;
  again.reconnect();
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
