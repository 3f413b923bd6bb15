// Bad input and overload against a real parleyd: typed errors, closed connections, and the
// server keeps serving everybody else, losing nothing.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <thread>

#include "client/ws_connection.hpp"
#include "test_client.hpp"

namespace parley::test {
namespace {

using namespace std::chrono_literals;

// Runs `io` until `f` is ready; returns its value.
template <class T>
T await_future(boost::asio::io_context& io, std::future<T>& f) {
  while (f.wait_for(0s) != std::future_status::ready) {
    io.restart();
    io.run_one_for(50ms);
  }
  return f.get();
}

v2::Frame expect_error(test_client& c, v2::ErrorCode code) {
  auto f = c.next(5s);
  EXPECT_TRUE(f.has_error()) << f.ShortDebugString();
  EXPECT_EQ(f.error().code(), code) << f.error().message();
  EXPECT_FALSE(f.error().message().empty());
  return f;
}

TEST(limits, bad_frames_get_typed_errors_and_others_are_served) {
  boost::asio::io_context io;
  server_process server;
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");

  // Not a protobuf at all.
  alice.api().send_raw("\xff\xff\xff\xff\x0f definitely not a frame");
  expect_error(alice, v2::ERROR_CODE_BAD_FRAME);

  // A string field that is not UTF-8 does not parse as a Frame (proto3).
  v2::Frame not_utf8;
  not_utf8.set_request_id(99);
  not_utf8.mutable_send_message()->set_to("bo\xff\xfe");
  not_utf8.mutable_send_message()->set_client_msg_id("x");
  alice.api().send_raw(not_utf8.SerializeAsString());
  expect_error(alice, v2::ERROR_CODE_BAD_FRAME);

  // Payload over 64 KiB (the frame itself is under the 256 KiB frame limit).
  auto big = alice.run(alice.api().send("bob", "big", std::string(64 * 1024 + 1, 'x')));
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, v2::ERROR_CODE_PAYLOAD_TOO_LARGE);
  // Exactly 64 KiB is fine.
  auto max = alice.run(alice.api().send("bob", "max", std::string(64 * 1024, 'x')));
  ASSERT_TRUE(max);

  auto unknown = alice.run(alice.api().send("nobody_here", "u1", "hi"));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, v2::ERROR_CODE_UNKNOWN_USER);

  auto bad_name = alice.run(alice.api().send("NOT VALID", "u2", "hi"));
  ASSERT_FALSE(bad_name);
  EXPECT_EQ(bad_name.error().code, v2::ERROR_CODE_INVALID_ARGUMENT);

  v2::Frame spoof;
  spoof.mutable_envelope()->set_payload("pretend to be the server");
  auto spoofed = alice.run(alice.api().request(spoof));
  ASSERT_FALSE(spoofed);
  EXPECT_EQ(spoofed.error().code, v2::ERROR_CODE_UNSUPPORTED);

  auto not_mine = alice.run(alice.api().status(123456789, 1));
  ASSERT_FALSE(not_mine);
  EXPECT_EQ(not_mine.error().code, v2::ERROR_CODE_NOT_FOUND);

  // Shapes the codec refuses: a SendMessage naming its chat twice, an empty Ack, an Ack
  // entry without a seq, a history page over 100.
  v2::Frame both;
  both.mutable_send_message()->set_to("bob");
  both.mutable_send_message()->set_chat_id(max->chat_id());
  both.mutable_send_message()->set_client_msg_id("both");
  both.mutable_send_message()->set_type(v2::CIPHER_TYPE_SIGNAL_MESSAGE);
  auto twice = alice.run(alice.api().request(both));
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, v2::ERROR_CODE_INVALID_ARGUMENT);
  v2::Frame no_cursors;
  no_cursors.mutable_ack();
  auto empty_ack = alice.run(alice.api().request(no_cursors));
  ASSERT_FALSE(empty_ack);
  EXPECT_EQ(empty_ack.error().code, v2::ERROR_CODE_INVALID_ARGUMENT);
  auto no_seq = alice.run(alice.api().ack({{max->chat_id(), 0}}));
  ASSERT_FALSE(no_seq);
  EXPECT_EQ(no_seq.error().code, v2::ERROR_CODE_INVALID_ARGUMENT);
  auto big_page = alice.run(alice.api().history_of_chat(max->chat_id(), 0, 101));
  ASSERT_FALSE(big_page);
  EXPECT_EQ(big_page.error().code, v2::ERROR_CODE_INVALID_ARGUMENT);

  auto again = alice.run(alice.api().register_account("alice2"));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, v2::ERROR_CODE_ALREADY_AUTHENTICATED);

  // Bob was served all along and still is; the oversized message never reached him.
  auto f = bob.next();
  ASSERT_TRUE(f.has_envelope());
  EXPECT_EQ(f.envelope().payload().size(), 64u * 1024);
  alice.send("bob", "still here");
  EXPECT_EQ(bob.next().envelope().payload(), "still here");
}

TEST(limits, requests_before_authentication_and_bad_tokens) {
  boost::asio::io_context io;
  server_process server;
  test_client owner(io, server.url());
  owner.register_and_login("owner");

  test_client anon(io, server.url());
  anon.connect();
  auto early = anon.run(anon.api().send("owner", "x", "hi"));
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().code, v2::ERROR_CODE_UNAUTHENTICATED);

  auto wrong = anon.run(anon.api().authenticate(owner.device_id, std::string(32, 'x')));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, v2::ERROR_CODE_AUTH_FAILED);
  auto no_device = anon.run(anon.api().authenticate(999999, std::string(32, 'x')));
  ASSERT_FALSE(no_device);
  EXPECT_EQ(no_device.error().code, v2::ERROR_CODE_AUTH_FAILED);

  auto taken = anon.run(anon.api().register_account("owner"));
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, v2::ERROR_CODE_USERNAME_TAKEN);
  auto invalid = anon.run(anon.api().register_account("No Such Name"));
  ASSERT_FALSE(invalid);
  EXPECT_EQ(invalid.error().code, v2::ERROR_CODE_INVALID_USERNAME);

  // A third failed authentication closes the connection.
  auto third = anon.run(anon.api().authenticate(owner.device_id, std::string(32, 'y')));
  ASSERT_FALSE(third);
  auto closed = anon.run(anon.api().next_push(5s));
  while (closed && closed->has_error()) closed = anon.run(anon.api().next_push(5s));
  ASSERT_FALSE(closed);
  EXPECT_EQ(closed.error().what, client::client_error::kind::closed);
}

// Before authentication frames are handled one at a time, so requests sent right behind
// Authenticate, without waiting for its answer, are served as the authenticated device.
TEST(limits, requests_pipelined_behind_authenticate_are_served_as_authenticated) {
  boost::asio::io_context io;
  server_process server;
  test_client owner(io, server.url());
  owner.register_and_login("owner");
  owner.disconnect();

  test_client again(io, server.url());
  again.connect();
  v2::Frame auth;  // request id 0: the answers arrive as pushes, in the order sent
  auth.mutable_authenticate()->set_device_id(owner.device_id);
  auth.mutable_authenticate()->set_token(owner.token);
  v2::Frame status;
  status.mutable_get_status()->set_chat_id(123456789);
  status.mutable_get_status()->set_seq(1);
  again.api().send_raw(auth.SerializeAsString());
  again.api().send_raw(status.SerializeAsString());
  auto first = again.next();
  ASSERT_TRUE(first.has_authenticated()) << first.ShortDebugString();
  // GetStatus's answer (NOT_FOUND, not UNAUTHENTICATED: that is no message of this account's)
  // and the drain's QueueEmpty, in either order.
  int not_found = 0, queue_empty = 0;
  for (int i = 0; i < 2; ++i) {
    auto f = again.next();
    if (f.has_queue_empty()) {
      ++queue_empty;
    } else if (f.has_error() && f.error().code() == v2::ERROR_CODE_NOT_FOUND) {
      ++not_found;
    } else {
      ADD_FAILURE() << f.ShortDebugString();
    }
  }
  EXPECT_EQ(not_found, 1);
  EXPECT_EQ(queue_empty, 1);
}

TEST(limits, oversized_frame_closes_only_that_connection) {
  boost::asio::io_context io;
  server_process server;
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");

  alice.api().send_raw(std::string(256 * 1024 + 1, 'z'));  // over the frame limit
  auto f = alice.run(alice.api().next_push(5s));
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().what, client::client_error::kind::closed);

  test_client carol(io, server.url());
  carol.register_and_login("carol");
  carol.send("bob", "server is fine");
  EXPECT_EQ(bob.next().envelope().payload(), "server is fine");
}

TEST(limits, a_connection_that_keeps_sending_garbage_is_closed) {
  boost::asio::io_context io;
  server_process server;
  test_client c(io, server.url());
  c.connect();
  for (int i = 0; i < 16; ++i) c.api().send_raw("garbage");
  int errors = 0;
  for (;;) {
    auto f = c.run(c.api().next_push(5s));
    if (!f) {
      EXPECT_EQ(f.error().what, client::client_error::kind::closed);
      break;
    }
    ASSERT_TRUE(f->has_error());
    ++errors;
  }
  EXPECT_EQ(errors, 16);
}

TEST(limits, unauthenticated_connection_times_out) {
  boost::asio::io_context io;
  server_process server({}, "[limits]\nauth_timeout_ms = 300\n");
  test_client c(io, server.url());
  c.connect();
  auto f = c.run(c.api().next_push(10s));
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().what, client::client_error::kind::closed);
}

TEST(limits, too_many_requests_in_flight) {
  boost::asio::io_context io;
  server_process server({}, "[limits]\nmax_in_flight = 1\n");
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");

  // 200 sends written back to back: each waits for an fsync, so most arrive while another is
  // in flight. Every request still gets exactly one answer.
  int ok = 0, refused = 0;
  for (const auto& r : alice.send_pipelined("bob", 200, "p")) {
    if (r) {
      ++ok;
    } else {
      ASSERT_EQ(r.error().code, v2::ERROR_CODE_TOO_MANY_IN_FLIGHT) << client::describe(r.error());
      ++refused;
    }
  }
  EXPECT_EQ(ok + refused, 200);
  EXPECT_GT(refused, 0);
  EXPECT_GT(ok, 0);
  // Exactly the accepted ones were delivered.
  EXPECT_EQ(bob.envelopes(static_cast<std::size_t>(ok)).size(), static_cast<std::size_t>(ok));
}

// A connection that logs in as `who`'s device and then never reads (a slow reader: what the
// server sends it piles up in the kernel's buffers, then in the server's queue). Null if it
// could not connect.
std::unique_ptr<client::ws_connection> unread_login(boost::asio::io_context& io,
                                                    const std::string& url,
                                                    const test_client& who) {
  auto ws = std::make_unique<client::ws_connection>(io.get_executor());
  if (block_on(io, ws->connect(url, 5s))) return nullptr;
  v2::Frame auth;
  auth.set_request_id(1);
  auth.mutable_authenticate()->set_device_id(who.device_id);
  auth.mutable_authenticate()->set_token(who.token);
  ws->send(auth.SerializeAsString());
  return ws;
}

TEST(limits, slow_reader_is_disconnected_and_loses_nothing) {
  boost::asio::io_context io;
  const auto env = env_for_rss_bounds();
  // A small outgoing queue: 64 frames or 1 MiB. (With the bound lifted, the same run grows the
  // server by ~93 MiB and fails the RSS check below; with it, see the note printed.)
  server_process server({},
                        "[limits]\nmax_outbound_frames = 64\nmax_outbound_bytes = 1048576\n"
                        "[rate_limits]\nsend_per_device = 0\n",
                        env);
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  bob.disconnect();

  // Bob's slow device: authenticates, then never reads.
  auto slow_device = unread_login(io, server.url(), bob);
  ASSERT_TRUE(slow_device);
  auto& slow = *slow_device;

  const long rss_before = server.rss_kb();
  const int n = 1500;
  const std::string payload(32 * 1024, 'p');  // 48 MiB in all
  for (int i = 0; i < n; ++i) alice.send("bob", payload, "slow-" + std::to_string(i));
  const long rss_after = server.rss_kb();

  const auto metrics = http_get(server.port(), "/metrics");
  EXPECT_NE(metrics.find("parley_slow_readers_closed_total 1\n"), std::string::npos) << metrics;
  // Without the bound, the server would hold every pushed frame (48 MiB) on top of the store's
  // own write buffers (another 48 MiB); with it, only the store's share grows.
  const long sent_kb = static_cast<long>(n) * 32;
  std::printf("server RSS grew %ld KiB while %ld KiB were sent to a reader that does not read\n",
              rss_after - rss_before, sent_kb);
  EXPECT_LT(rss_after - rss_before, sent_kb * 3 / 2)
      << "server RSS grew " << (rss_after - rss_before) << " KiB for " << sent_kb << " KiB sent";

  // The slow connection was dropped: reading now hits the end after what was buffered.
  bool ended = false;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto [ec, bytes] = block_on(io, slow.read());
    if (ec) {
      ended = true;
      break;
    }
  }
  EXPECT_TRUE(ended);

  // Everything is still there for bob: his cursor never moved.
  test_client bob2(io, server.url());
  bob2.login_as(bob);
  const auto got = test_client::envelopes_in(bob2.drain(60s));
  ASSERT_EQ(got.size(), static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) EXPECT_EQ(got[i].seq(), static_cast<std::uint64_t>(i + 1));
}

// A client may pipeline requests with large answers and read the answers later (§2 allows 256
// in flight; a History page is up to 512 KiB of payload). Reading its requests then pauses
// while the answers wait, counted at their largest (TCP slows the client), instead of the
// answers overflowing the outgoing queue and closing a client that does read, as a slow
// reader.
TEST(limits, pipelined_history_requests_read_later_do_not_close_the_connection) {
  boost::asio::io_context io;
  server_process server({},
                        "[limits]\nmax_outbound_bytes = 1048576\n"
                        "[rate_limits]\nsend_per_device = 0\n");
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  bob.disconnect();
  const std::string payload(60 * 1024, 'h');
  for (int i = 0; i < 10; ++i) alice.send("bob", payload, "h-" + std::to_string(i));

  auto device = unread_login(io, server.url(), bob);
  ASSERT_TRUE(device);
  const int n = 60;  // 60 pages of 8 messages (480 KiB): 28 MiB of answers
  for (int i = 0; i < n; ++i) {
    v2::Frame f;
    f.set_request_id(static_cast<std::uint64_t>(100 + i));
    f.mutable_get_history()->set_peer("alice");
    device->send(f.SerializeAsString());
  }
  std::this_thread::sleep_for(1s);  // not reading: the answers wait

  int histories = 0;
  bool ended = false;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (histories < n && std::chrono::steady_clock::now() < deadline) {
    auto [ec, bytes] = block_on(io, device->read());
    if (ec) {
      ended = true;
      break;
    }
    v2::Frame f;
    ASSERT_TRUE(f.ParseFromString(bytes));
    if (!f.has_history()) continue;
    EXPECT_EQ(f.history().messages_size(), 8) << "request " << f.request_id();
    ++histories;
  }
  EXPECT_FALSE(ended) << "the connection was closed after " << histories << " answers";
  EXPECT_EQ(histories, n);
  const auto metrics = http_get(server.port(), "/metrics");
  EXPECT_NE(metrics.find("parley_slow_readers_closed_total 0\n"), std::string::npos) << metrics;
}

// The queue's bound in frames closes a reader that does not read as the bound in bytes does:
// 16 frames of 32 KiB are 512 KiB, and the byte bound is set far above what is sent (without
// the frame bound nothing would close it).
TEST(limits, a_slow_reader_is_closed_at_the_frame_bound_too) {
  boost::asio::io_context io;
  server_process server({},
                        "[limits]\nmax_outbound_frames = 16\nmax_outbound_bytes = 268435456\n"
                        "[rate_limits]\nsend_per_device = 0\n");
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  bob.disconnect();
  auto slow = unread_login(io, server.url(), bob);
  ASSERT_TRUE(slow);

  // 24 MiB: more than the kernel's socket buffers take, far less than the byte bound.
  const int n = 768;
  const std::string payload(32 * 1024, 'p');
  for (int i = 0; i < n; ++i) alice.send("bob", payload, "f-" + std::to_string(i));
  const auto metrics = http_get(server.port(), "/metrics");
  EXPECT_NE(metrics.find("parley_slow_readers_closed_total 1\n"), std::string::npos) << metrics;

  test_client bob2(io, server.url());
  bob2.login_as(bob);
  const auto got = test_client::envelopes_in(bob2.drain(60s));
  ASSERT_EQ(got.size(), static_cast<std::size_t>(n));
}

// Presence events are ephemeral (protocol.md §4, SubscribePresence): the current states that
// follow a subscription's Ok, like the later changes, are dropped when they do not fit the
// outgoing queue; they never close the connection as a slow reader. Here the queue holds 4
// frames, and the Ok and 12 states are queued at once.
TEST(limits, presence_states_that_do_not_fit_are_dropped_without_closing) {
  boost::asio::io_context io;
  server_process server({}, "[limits]\nmax_outbound_frames = 4\n");
  auto watcher = online(io, server.url(), "watcher");
  std::vector<std::string> friends;
  for (int i = 0; i < 12; ++i) {
    friends.push_back("friend" + std::to_string(i));
    auto f = online(io, server.url(), friends.back());
    f.send("watcher", "hi");  // a chat with the watcher: presence passes between them
    ASSERT_TRUE(watcher.next().has_envelope());
  }
  ASSERT_TRUE(watcher.run(watcher.api().subscribe_presence(friends)));
  int states = 0;
  while (auto push = watcher.run(watcher.api().next_push(300ms))) {
    ASSERT_TRUE(push->has_presence()) << push->ShortDebugString();
    ++states;
  }
  EXPECT_GE(states, 1);
  EXPECT_LE(states, 12);
  // Still connected and served: the same subscription again is answered.
  EXPECT_TRUE(watcher.run(watcher.api().subscribe_presence({"friend0"})));
  const auto metrics = http_get(server.port(), "/metrics");
  EXPECT_NE(metrics.find("parley_slow_readers_closed_total 0\n"), std::string::npos) << metrics;
}

// A group message in flight costs the server one copy of it, not one per member (issue 14's
// "memory per in-flight group message"): 64 members that never read, 120 messages of 60 KiB
// (7 MiB) to the group. The kernel's socket buffers take about the first 4 MiB of each
// member's; the rest wait in the members' outgoing queues, which parley_buffered_bytes counts
// per member, as if each held a copy, while each message is one encoded frame that every
// queue shares. So the server grows by a few copies of what was sent (the queues' one, the
// store's memtable), not by what the queues count.
TEST(limits, a_group_message_in_flight_is_held_once_not_per_member) {
  boost::asio::io_context io;
  server_process server({},
                        "[rate_limits]\nregister_per_address = 0\nregister_global = 0\n"
                        "send_per_device = 0\ngroup_change_per_device = 0\n",
                        env_for_rss_bounds());
  auto alice = online(io, server.url(), "alice");
  constexpr int members = 64;
  constexpr int messages = 120;
  std::vector<test_client> others;
  std::vector<std::string> names;
  for (int i = 0; i < members; ++i) {
    others.push_back(online(io, server.url(), "member" + std::to_string(i)));
    others.back().disconnect();
    names.push_back(others.back().username);
  }
  auto group = alice.run(alice.api().create_group("in flight", names));
  ASSERT_TRUE(group) << client::describe(group.error());
  std::vector<std::unique_ptr<client::ws_connection>> unread;
  for (const auto& m : others) {
    unread.push_back(unread_login(io, server.url(), m));
    ASSERT_TRUE(unread.back());
  }
  // The queues' bytes once they stop changing (the pushes follow the commits).
  auto settled_buffered = [&] {
    long long last = -1;
    for (int i = 0; i < 50; ++i) {
      std::this_thread::sleep_for(200ms);
      const long long now = metric(server.port(), "parley_buffered_bytes");
      if (now < 0 || now == last) return now;
      last = now;
    }
    return last;
  };
  const long long buffered_before = settled_buffered();
  const long rss_before = server.rss_kb();
  const std::string payload(60 * 1024, 'g');
  for (int i = 0; i < messages; ++i) {
    auto r =
        alice.run(alice.api().send_to_chat(group->chat_id(), "g" + std::to_string(i), payload));
    ASSERT_TRUE(r) << client::describe(r.error());
  }
  const long long queued = settled_buffered() - buffered_before;
  const long grown_kb = server.rss_kb() - rss_before;
  std::printf(
      "%d messages of 60 KiB to %d members who do not read: the queues hold %lld KiB "
      "counted per member; server RSS grew %ld KiB\n",
      messages, members, queued / 1024, grown_kb);
  const long long sent_kb = messages * 60ll;
  ASSERT_GT(queued / 1024, 10 * sent_kb) << "the members' queues hold less than the test needs";
#if !defined(__SANITIZE_THREAD__)  // TSan's shadow memory grows with every byte touched
  EXPECT_LT(grown_kb, 3 * sent_kb) << "the server holds more than a few copies of what was sent";
#endif
}

// A backlog many times the outgoing queue: the drain waits for room in the queue instead of
// overflowing it, so a device that reads slowly while it catches up is not taken for a slow
// reader, and its requests are answered while the drain goes on.
TEST(limits, a_large_drain_is_paced_and_requests_are_answered_meanwhile) {
  boost::asio::io_context io;
  // 8 frames or 1 MiB queued per connection: the frame count binds first (8 of the messages
  // below are 0.5 MiB), so a drain that filled the queue to its limit would leave no room
  // for a Pong, however small. The backlog is 3,000 of them, 176 MiB: many times the queue
  // and the sockets' buffers together.
  server_process server({},
                        "[limits]\nmax_outbound_frames = 8\nmax_outbound_bytes = 1048576\n"
                        "[rate_limits]\nsend_per_device = 0\n");
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  bob.disconnect();

  const int n = 3000;
  const std::string payload(60 * 1024, 'q');
  for (int done = 0; done < n;) {
    // Pipelined, 4 at a time: alice's answers share the small outgoing queue (8 frames).
    std::vector<std::future<client::result<v2::SendResult>>> batch;
    for (int i = done; i < n && i < done + 4; ++i) {
      batch.push_back(boost::asio::co_spawn(
          io, alice.api().send("bob", "backlog-" + std::to_string(i), payload),
          boost::asio::use_future));
    }
    for (auto& s : batch) {
      auto r = await_future(io, s);
      ASSERT_TRUE(r) << client::describe(r.error());
    }
    done += static_cast<int>(batch.size());
  }

  // Bob's device catches up on a connection the test reads one frame at a time.
  client::ws_connection conn(io.get_executor());
  ASSERT_FALSE(block_on(io, conn.connect(server.url(), 5s)));
  v2::Frame auth;
  auth.set_request_id(1);
  auth.mutable_authenticate()->set_device_id(bob.device_id);
  auth.mutable_authenticate()->set_token(bob.token);
  conn.send(auth.SerializeAsString());

  std::uint64_t next_seq = 1;  // the drain pushes the chat in seq order
  bool queue_empty = false;
  std::uint64_t drained = 0;
  std::set<std::uint64_t> pongs;  // request ids answered
  // Reads the next frame; false, and a failure, if the connection ended.
  const auto read_one = [&]() -> bool {
    auto [ec, bytes] = block_on(io, conn.read(), 20s);
    if (ec) {
      ADD_FAILURE() << "the connection ended after seq " << next_seq - 1 << ": " << ec.message();
      return false;
    }
    v2::Frame f;
    if (!f.ParseFromString(bytes)) {
      ADD_FAILURE() << "not a frame";
      return false;
    }
    if (f.has_envelope()) {
      EXPECT_EQ(f.envelope().seq(), next_seq);
      next_seq = f.envelope().seq() + 1;
    } else if (f.has_queue_empty()) {
      queue_empty = true;
      drained = f.queue_empty().drained();
    } else if (f.has_pong()) {
      pongs.insert(f.request_id());
    } else if (!f.has_authenticated() && !f.has_receipts()) {
      ADD_FAILURE() << f.ShortDebugString();
    }
    return true;
  };

  // Reads slowly: a few frames, then nothing for a while, so that the socket's buffers and
  // then the server's queue fill up; then a Ping, which finds the queue full and must still
  // be answered.
  int pongs_while_draining = 0;
  for (std::uint64_t round = 1; round <= 6; ++round) {
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(read_one());
      std::this_thread::sleep_for(20ms);
    }
    std::this_thread::sleep_for(250ms);
    v2::Frame ping;
    ping.set_request_id(100 + round);
    ping.mutable_ping();
    conn.send(ping.SerializeAsString());
    while (pongs.count(100 + round) == 0) {
      ASSERT_TRUE(read_one()) << "waiting for the Pong of round " << round;
    }
    if (!queue_empty) ++pongs_while_draining;
  }
  // Then reads as fast as it can.
  while (!queue_empty) ASSERT_TRUE(read_one());
  EXPECT_EQ(next_seq - 1, static_cast<std::uint64_t>(n));
  EXPECT_EQ(drained, static_cast<std::uint64_t>(n));
  EXPECT_GE(pongs_while_draining, 3) << "the drain ended before the test could read slowly";
  const auto metrics = http_get(server.port(), "/metrics");
  EXPECT_NE(metrics.find("parley_slow_readers_closed_total 0\n"), std::string::npos) << metrics;
  // Still the same connection.
  v2::Frame ping;
  ping.set_request_id(200);
  ping.mutable_ping();
  conn.send(ping.SerializeAsString());
  while (pongs.count(200) == 0) ASSERT_TRUE(read_one());
  conn.abort();
}

}  // namespace
}  // namespace parley::test
