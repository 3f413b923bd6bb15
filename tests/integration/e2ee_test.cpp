// End-to-end encryption through a real parleyd: sessions set up from the prekey service,
// messages both ways (crossing first messages, out-of-order and lost ones), reinstalls, prekey
// exhaustion and concurrent fetches, the server's key checks, groups with sender keys and their
// rotation when a member is removed, and no plaintext on the server's disk or on the wire.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <algorithm>
#include <fstream>
#include <map>
#include <set>

#include "client/local_store.hpp"
#include "client/messenger.hpp"
#include "client/padding.hpp"
#include "e2ee/library_context.hpp"
#include "e2ee/signal_engine.hpp"
#include "parley/content/v1/content.pb.h"
#include "recording_relay.hpp"
#include "temp_dir.hpp"
#include "test_client.hpp"

namespace parley::test {
namespace {

namespace fs = std::filesystem;
namespace content = parley::content;

// An SDK user with its own local store (a real SQLite file) and messenger.
struct secure_user {
  secure_user(boost::asio::io_context& io, const std::string& url, const fs::path& dir,
              e2ee::library_context& lib, const std::string& name)
      : conn(io, url), lib_(lib), file(dir / name / "local.db") {
    conn.register_and_login(name);
    open_store();
    publish();
  }
  void open_store() {
    messenger.reset();
    store = std::make_unique<client::local_store>(file);
    messenger = std::make_unique<client::messenger>(conn.api(), *store, lib_, conn.username,
                                                    conn.device_id);
  }
  void publish() {
    auto r = conn.run(messenger->publish_keys(conn.authenticated));
    ASSERT_TRUE(r) << client::describe(r.error());
  }
  // As the CLI does (messenger::settle_left_groups): at QueueEmpty, and once the drain is
  // over after each group event or sender key opened.
  void settle_if(bool now) {
    if (!now) return;
    auto r = messenger->settle_left_groups();
    EXPECT_TRUE(r) << client::describe(r.error());
  }
  bool settles_after(client::opened_message::kind what) const {
    return live && (what == client::opened_message::kind::event ||
                    what == client::opened_message::kind::sender_key);
  }
  // A new connection of this device: its drain comes first, then QueueEmpty.
  void reconnect() {
    live = false;
    conn.reconnect();
  }
  client::sealed_message seal(const std::string& peer, const std::string& text) {
    auto r = conn.run(messenger->seal(peer, text));
    EXPECT_TRUE(r) << client::describe(r.error());
    return r ? *r : client::sealed_message{};
  }
  v2::SendResult send(client::sealed_message m, const std::string& client_id = {}) {
    auto r = conn.run(messenger->send(std::move(m), client_id.empty() ? next_id() : client_id));
    EXPECT_TRUE(r) << client::describe(r.error());
    return r ? *r : v2::SendResult{};
  }
  void say(const std::string& peer, const std::string& text) { send(seal(peer, text)); }
  // Waits for `expected` messages (at most 10 s), then 200 ms more for any extra one; opens
  // them, then acks them per chat (one Ack, each chat up to its highest stored seq). The texts
  // in arrival order (undecryptable ones as "!" + the problem). Other pushes (Receipts...) are
  // dropped.
  std::vector<std::string> receive(std::size_t expected) {
    std::vector<std::string> out;
    client::ack_batch acks;
    std::vector<v2::Frame> frames;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::size_t envelopes = 0;
    for (;;) {
      const bool waiting = envelopes < expected && std::chrono::steady_clock::now() < deadline;
      auto f = conn.run(conn.api().next_push(waiting ? std::chrono::milliseconds(10'000)
                                                     : std::chrono::milliseconds(200)));
      if (!f) break;
      if (f->has_envelope()) ++envelopes;
      frames.push_back(std::move(*f));
    }
    for (const auto& f : frames) {
      if (f.has_queue_empty()) {
        live = true;
        settle_if(true);
      }
      if (!f.has_envelope()) continue;
      auto opened = messenger->open(f.envelope());
      settle_if(settles_after(opened.what));
      if (opened.what == client::opened_message::kind::text) out.push_back(opened.text);
      if (opened.what == client::opened_message::kind::undecryptable)
        out.push_back("!" + opened.problem);
      EXPECT_NE(opened.what, client::opened_message::kind::not_stored) << opened.problem;
      acks.add(f.envelope(), opened);
    }
    while (!acks.empty()) {
      auto r = conn.run(conn.api().ack(acks.take()));
      EXPECT_TRUE(r) << client::describe(r.error());
    }
    return out;
  }
  // Opens pushes as they come (as a device does: each chat's Envelopes in order, the chats
  // interleaved) and acks each, until `texts` entries were gathered (at most 10 s), then until
  // 200 ms pass without a push. Entries: readable texts, "* " + an event's description, "!" +
  // a problem; a group message kept for its key comes when the key does (take_released).
  // Sender keys and pending messages add no entry. Every Envelope is kept in `seen`.
  std::vector<std::string> collect(std::size_t texts) {
    std::vector<std::string> out;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      const bool waiting = out.size() < texts && std::chrono::steady_clock::now() < deadline;
      auto f = conn.run(conn.api().next_push(waiting ? std::chrono::milliseconds(10'000)
                                                     : std::chrono::milliseconds(200)));
      if (!f) break;
      if (f->has_queue_empty()) {
        live = true;
        settle_if(true);
      }
      if (!f->has_envelope()) continue;
      const auto& e = f->envelope();
      seen.push_back(e);
      auto opened = messenger->open(e);
      settle_if(settles_after(opened.what));
      EXPECT_NE(opened.what, client::opened_message::kind::not_stored) << opened.problem;
      if (opened.what == client::opened_message::kind::text) out.push_back(opened.text);
      if (opened.what == client::opened_message::kind::event) out.push_back("* " + opened.text);
      if (opened.what == client::opened_message::kind::undecryptable)
        out.push_back("!" + opened.problem);
      for (const auto& m : messenger->take_released())
        out.push_back(m.problem.empty() ? m.text : "!" + m.problem);
      client::ack_batch acks;
      acks.add(e, opened);
      while (!acks.empty()) {
        auto r = conn.run(conn.api().ack(acks.take()));
        EXPECT_TRUE(r) << client::describe(r.error());
      }
    }
    return out;
  }
  client::group_sent say_to_group(std::uint64_t chat_id, const std::string& text) {
    auto r = conn.run(messenger->send_group(chat_id, text, next_id()));
    EXPECT_TRUE(r) << client::describe(r.error());
    return r ? *r : client::group_sent{};
  }
  // Applies the Receipts pushed (to this account's messenger) until one says `status` up to
  // at least `up_to_seq` (true), or 10 s pass (false).
  bool await_receipt(v2::MessageStatus status, std::uint64_t up_to_seq) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      auto f = conn.run(conn.api().next_push(std::chrono::milliseconds(500)));
      if (!f || !f->has_receipts()) continue;
      bool reached = false;
      for (const auto& r : f->receipts().receipts()) {
        auto applied = messenger->apply_receipt(r);
        EXPECT_TRUE(applied) << client::describe(applied.error());
        if (r.status() == status && r.up_to_seq() >= up_to_seq) reached = true;
      }
      if (reached) return true;
    }
    return false;
  }
  std::string next_id() { return "e" + std::to_string(++ids_); }

  test_client conn;
  e2ee::library_context& lib_;
  fs::path file;
  std::unique_ptr<client::local_store> store;
  std::unique_ptr<client::messenger> messenger;
  std::vector<v2::Envelope> seen;  // every Envelope collect() opened
  bool live = false;               // this connection's QueueEmpty was seen
  int ids_ = 0;
};

bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

class e2ee_test : public ::testing::Test {
 protected:
  std::unique_ptr<secure_user> user(const std::string& name, const std::string& url = {}) {
    return std::make_unique<secure_user>(io, url.empty() ? server.url() : url, dir_.path(), lib,
                                         name);
  }

  boost::asio::io_context io;
  server_process server;
  e2ee::library_context lib;
  test_support::temp_dir dir_{"parley_e2ee_it_"};
};

// The offset just past the SignalMessage inside a serialized PreKeySignalMessage (version byte,
// then protobuf fields; field 4 is the embedded message, whose last 8 bytes are its MAC).
std::size_t end_of_inner_message(const std::string& m) {
  std::size_t i = 1;
  auto varint = [&] {
    std::uint64_t v = 0;
    for (int shift = 0; i < m.size(); shift += 7) {
      const auto byte = static_cast<unsigned char>(m[i++]);
      v |= std::uint64_t(byte & 0x7f) << shift;
      if (!(byte & 0x80)) break;
    }
    return v;
  };
  while (i < m.size()) {
    const auto key = varint();
    if ((key & 7) == 0) {
      varint();
    } else if ((key & 7) == 2) {
      const auto len = varint();
      if ((key >> 3) == 4) return i + len;
      i += len;
    } else {
      break;
    }
  }
  return 0;
}

// Every byte of every file under `dir`.
std::string read_tree(const fs::path& dir) {
  std::string all;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    all.append(std::istreambuf_iterator<char>(in), {});
  }
  return all;
}

TEST_F(e2ee_test, sessions_from_the_prekey_service_carry_messages_both_ways) {
  auto alice = user("alice");
  auto bob = user("bob");
  alice->say("bob", "hello bob");
  alice->say("bob", "second before any reply");
  EXPECT_EQ(bob->receive(2), (std::vector<std::string>{"hello bob", "second before any reply"}));
  bob->say("alice", "hello alice");
  EXPECT_EQ(alice->receive(1), std::vector<std::string>{"hello alice"});
  for (int i = 0; i < 5; ++i) {
    alice->say("bob", "a" + std::to_string(i));
    bob->say("alice", "b" + std::to_string(i));
  }
  EXPECT_EQ(bob->receive(5).size(), 5u);
  EXPECT_EQ(alice->receive(5).size(), 5u);
  // Both keep the chat in their own history, each message at its place in the one chat's log
  // (seq 1-13, the same on both sides); the safety numbers agree.
  const auto at_alice = alice->store->history("bob", 100);
  const auto at_bob = bob->store->history("alice", 100);
  EXPECT_EQ(at_alice.size(), 13u);  // 7 sent, 6 received
  EXPECT_EQ(at_bob.size(), 13u);
  const auto chat = alice->store->chat_of("bob");
  ASSERT_TRUE(chat);
  EXPECT_NE(*chat, 0u);
  EXPECT_EQ(bob->store->chat_of("alice"), chat);
  std::map<std::uint64_t, std::uint64_t> seq_of;  // message id -> seq, at alice
  for (const auto& m : at_alice) {
    EXPECT_EQ(m.chat_id, *chat);
    seq_of[m.server_id] = m.seq;
  }
  std::set<std::uint64_t> seqs;
  for (const auto& m : at_bob) {
    EXPECT_EQ(m.chat_id, *chat);
    EXPECT_EQ(seq_of[m.server_id], m.seq) << m.text;
    seqs.insert(m.seq);
  }
  EXPECT_EQ(seqs.size(), 13u);
  EXPECT_EQ(*seqs.begin(), 1u);
  EXPECT_EQ(*seqs.rbegin(), 13u);
  auto a = alice->conn.run(alice->messenger->safety_number("bob"));
  auto b = bob->conn.run(bob->messenger->safety_number("alice"));
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, *b);
}

TEST_F(e2ee_test, first_messages_that_cross_each_other_both_arrive) {
  auto alice = user("alice");
  auto bob = user("bob");
  // Both set up a session from the other's bundle before anything arrived.
  auto from_alice = alice->seal("bob", "alice speaks first");
  auto from_bob = bob->seal("alice", "no, bob does");
  EXPECT_EQ(from_alice.type, v2::CIPHER_TYPE_PREKEY_MESSAGE);
  EXPECT_EQ(from_bob.type, v2::CIPHER_TYPE_PREKEY_MESSAGE);
  alice->send(from_alice);
  bob->send(from_bob);
  EXPECT_EQ(bob->receive(1), std::vector<std::string>{"alice speaks first"});
  EXPECT_EQ(alice->receive(1), std::vector<std::string>{"no, bob does"});
  for (int round = 0; round < 3; ++round) {
    const auto a = "from alice " + std::to_string(round);
    const auto b = "from bob " + std::to_string(round);
    alice->say("bob", a);
    bob->say("alice", b);
    EXPECT_EQ(bob->receive(1), std::vector<std::string>{a});
    EXPECT_EQ(alice->receive(1), std::vector<std::string>{b});
  }
}

TEST_F(e2ee_test, out_of_order_and_lost_messages_still_decrypt) {
  auto alice = user("alice");
  auto bob = user("bob");
  alice->say("bob", "hi");
  bob->say("alice", "hi back");  // the session is confirmed both ways
  ASSERT_EQ(bob->receive(1).size(), 1u);
  ASSERT_EQ(alice->receive(1).size(), 1u);
  std::vector<client::sealed_message> m;
  for (int i = 0; i < 4; ++i) m.push_back(alice->seal("bob", "m" + std::to_string(i)));
  // The server gets (and delivers) them in the order m3, m1, m0; m2 is held back.
  alice->send(m[3]);
  alice->send(m[1]);
  alice->send(m[0]);
  EXPECT_EQ(bob->receive(3), (std::vector<std::string>{"m3", "m1", "m0"}));
  bob->say("alice", "got three");
  EXPECT_EQ(alice->receive(1), std::vector<std::string>{"got three"});
  alice->send(m[2]);  // late, after the ratchet turned
  EXPECT_EQ(bob->receive(1), std::vector<std::string>{"m2"});
}

TEST_F(e2ee_test, undecryptable_messages_are_reported_and_acked_never_shown) {
  auto alice = user("alice");
  auto bob = user("bob");
  alice->say("bob", "real one");
  // A client that does not encrypt (but names bob's current keys, so the server takes it):
  // the server cannot tell, bob's device can.
  test_client raw(io, server.url());
  raw.register_and_login("mallory");
  auto keys = raw.run(raw.api().fetch_keys("bob"));
  ASSERT_TRUE(keys);
  auto sent =
      raw.run(raw.api().send("bob", "m1", "plain bytes pretending to be a SignalMessage",
                             v2::CIPHER_TYPE_SIGNAL_MESSAGE, keys->bundles(0).registration_id()));
  ASSERT_TRUE(sent) << client::describe(sent.error());
  // Without naming them, the server refuses: its keys would not match.
  auto blind = raw.run(raw.api().send("bob", "m2", "x"));
  ASSERT_FALSE(blind);
  EXPECT_EQ(blind.error().code, v2::ERROR_CODE_STALE_KEYS);
  auto got = bob->receive(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], "real one");
  EXPECT_EQ(got[1].front(), '!') << got[1];
  EXPECT_EQ(got[1].find("plain bytes"), std::string::npos);
  // Acked (both chats, in one Ack): not pushed again, not even after a reconnect.
  bob->conn.reconnect();
  EXPECT_TRUE(bob->receive(0).empty());
  auto history = bob->store->history("mallory", 10);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_TRUE(history[0].text.empty());
  EXPECT_FALSE(history[0].problem.empty());
}

TEST_F(e2ee_test, a_forged_first_message_leaves_no_trace_but_a_real_new_key_is_shown) {
  auto alice = user("alice");
  auto bob = user("bob");
  alice->say("bob", "hi");
  ASSERT_EQ(bob->receive(1).size(), 1u);
  const auto trusted = bob->store->identity("alice");
  const auto number = bob->conn.run(bob->messenger->safety_number("alice"));
  ASSERT_TRUE(trusted && number);

  // The server (or whoever runs it) makes a PreKeySignalMessage "from alice" with a key of
  // its own, from bob's published bundle.
  client::local_store eve_store(dir_.path() / "eve" / "local.db");
  e2ee::signal_engine eve(lib, eve_store);
  ASSERT_TRUE(eve.create_identity(1));
  auto keys = alice->conn.run(alice->conn.api().fetch_keys("bob"));
  ASSERT_TRUE(keys);
  auto bundle = client::from_wire(keys->bundles(0));
  ASSERT_TRUE(bundle && bundle->one_time_prekey);
  ASSERT_TRUE(eve.process_bundle(*bundle));
  content::v1::Content pwned;
  pwned.set_text("pwned");
  auto forged = eve.encrypt("bob", bundle->device, client::pad(pwned.SerializeAsString()));
  ASSERT_TRUE(forged);
  ASSERT_EQ(forged->type, e2ee::message_type::prekey);
  v2::Envelope envelope;
  envelope.set_message_id(1);
  envelope.set_from("alice");
  envelope.set_from_device(alice->conn.device_id);
  envelope.set_type(v2::CIPHER_TYPE_PREKEY_MESSAGE);

  // With a broken MAC: reported, and nothing of it is kept: not the key, not a warning.
  const auto mac_end = end_of_inner_message(forged->bytes);
  ASSERT_GT(mac_end, 8u);
  envelope.set_payload(forged->bytes);
  (*envelope.mutable_payload())[mac_end - 1] ^= 0x01;
  auto opened = bob->messenger->open(envelope);
  EXPECT_EQ(opened.what, client::opened_message::kind::undecryptable);
  EXPECT_EQ(bob->store->identity("alice"), trusted);
  EXPECT_TRUE(bob->messenger->take_identity_changes().empty());
  auto unchanged = bob->conn.run(bob->messenger->safety_number("alice"));
  ASSERT_TRUE(unchanged);
  EXPECT_EQ(*unchanged, *number);

  // Intact, it opens under eve's key: that is a real key change, and bob is told.
  envelope.set_message_id(2);
  envelope.set_payload(forged->bytes);
  opened = bob->messenger->open(envelope);
  EXPECT_EQ(opened.what, client::opened_message::kind::text);
  auto changes = bob->messenger->take_identity_changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].peer, "alice");
  auto changed = bob->conn.run(bob->messenger->safety_number("alice"));
  ASSERT_TRUE(changed);
  EXPECT_NE(*changed, *number);
}

// Receipts are watermarks: the sender's messenger keeps them, and each sent message of its
// history has the status they give it (read implies delivered).
TEST_F(e2ee_test, watermark_receipts_give_each_sent_message_its_status) {
  auto alice = user("alice");
  auto bob = user("bob");
  const auto first = alice->send(alice->seal("bob", "one"));
  const auto second = alice->send(alice->seal("bob", "two"));
  ASSERT_NE(first.chat_id(), 0u);
  EXPECT_EQ(second.chat_id(), first.chat_id());
  EXPECT_EQ(second.seq(), first.seq() + 1);
  auto status_at_alice = [&](const v2::SendResult& r) {
    auto m = alice->store->message(r.message_id());
    EXPECT_TRUE(m);
    EXPECT_EQ(m ? m->seq : 0, r.seq());
    return m ? m->status : client::message_status::unknown;
  };
  EXPECT_EQ(status_at_alice(first), client::message_status::sent);

  EXPECT_EQ(bob->receive(2), (std::vector<std::string>{"one", "two"}));  // acked up to seq 2
  ASSERT_TRUE(alice->await_receipt(v2::MESSAGE_STATUS_DELIVERED, second.seq()));
  EXPECT_EQ(status_at_alice(first), client::message_status::delivered);
  EXPECT_EQ(status_at_alice(second), client::message_status::delivered);

  // Bob reads the first only: one message read, the other still delivered.
  ASSERT_TRUE(bob->conn.run(bob->conn.api().mark_read(first.chat_id(), first.seq())));
  ASSERT_TRUE(alice->await_receipt(v2::MESSAGE_STATUS_READ, first.seq()));
  EXPECT_EQ(status_at_alice(first), client::message_status::read);
  EXPECT_EQ(status_at_alice(second), client::message_status::delivered);
  const auto marks = alice->store->watermarks_of(first.chat_id(), "bob");
  EXPECT_EQ(marks.delivered_seq, second.seq());
  EXPECT_EQ(marks.read_seq, first.seq());
  // The server says the same.
  auto on_server = alice->conn.run(alice->conn.api().status(second.chat_id(), second.seq()));
  ASSERT_TRUE(on_server) << client::describe(on_server.error());
  EXPECT_EQ(*on_server, v2::MESSAGE_STATUS_DELIVERED);

  // After a reconnect the server repeats the current watermarks: nothing moves again.
  alice->conn.reconnect();
  bool repeated = false;
  for (const auto& f : alice->conn.drain()) {
    if (!f.has_receipts()) continue;
    for (const auto& r : f.receipts().receipts()) {
      repeated = true;
      auto moved = alice->messenger->apply_receipt(r);
      ASSERT_TRUE(moved);
      EXPECT_FALSE(*moved);
    }
  }
  EXPECT_TRUE(repeated);
  EXPECT_EQ(status_at_alice(first), client::message_status::read);
}

TEST_F(e2ee_test, a_reinstall_is_detected_recorded_and_messages_still_arrive) {
  auto alice = user("alice");
  auto bob = user("bob");
  alice->say("bob", "before");
  EXPECT_EQ(bob->receive(1), std::vector<std::string>{"before"});
  auto before = alice->conn.run(alice->messenger->safety_number("bob"));
  ASSERT_TRUE(before);

  // Bob loses his device's data but keeps his account: a new identity is published.
  bob->messenger.reset();
  bob->store.reset();
  fs::remove_all(bob->file.parent_path());
  bob->open_store();
  bob->conn.reconnect();
  bob->publish();

  // Alice's old session is refused by the server (STALE_KEYS) instead of stored as garbage;
  // her messenger fetches the new keys, records the change and sends again.
  alice->say("bob", "after");
  auto changes = alice->messenger->take_identity_changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].peer, "bob");
  EXPECT_EQ(bob->receive(1), std::vector<std::string>{"after"});
  auto after = alice->conn.run(alice->messenger->safety_number("bob"));
  ASSERT_TRUE(after);
  EXPECT_NE(*after, *before);
  EXPECT_EQ(*after, *bob->conn.run(bob->messenger->safety_number("alice")));
  bob->say("alice", "I'm back");
  EXPECT_EQ(alice->receive(1), std::vector<std::string>{"I'm back"});
  EXPECT_TRUE(alice->messenger->take_identity_changes().empty());  // told once
}

TEST_F(e2ee_test, concurrent_fetches_share_no_prekey_and_exhaustion_still_works) {
  // Without the per-pair budget (the next test has it), so that six fetchers can drain.
  server_process open({}, "[rate_limits]\none_time_prekey_per_pair = 0\n");
  auto bob = user("bob", open.url());
  ASSERT_EQ(bob->conn.drain().size(), 0u);
  constexpr int clients = 6, fetches = 20;  // 120 fetches of 100 one-time prekeys
  std::vector<std::unique_ptr<test_client>> fetchers;
  for (int i = 0; i < clients; ++i) {
    fetchers.push_back(std::make_unique<test_client>(io, open.url()));
    fetchers.back()->register_and_login("fetcher" + std::to_string(i));
  }
  // All requests in flight at once, on separate connections.
  std::vector<std::future<client::result<v2::KeyBundles>>> pending;
  for (int i = 0; i < fetches; ++i) {
    for (auto& f : fetchers) {
      pending.push_back(
          boost::asio::co_spawn(io, f->api().fetch_keys("bob"), boost::asio::use_future));
    }
  }
  std::multiset<std::uint32_t> taken;
  int without = 0;
  for (auto& p : pending) {
    while (p.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      io.restart();
      io.run_one_for(std::chrono::milliseconds(20));
    }
    auto r = p.get();
    ASSERT_TRUE(r) << client::describe(r.error());
    ASSERT_EQ(r->bundles_size(), 1);
    if (r->bundles(0).has_one_time_prekey()) {
      taken.insert(r->bundles(0).one_time_prekey().id());
    } else {
      ++without;
    }
  }
  EXPECT_EQ(taken.size(), 100u);
  EXPECT_EQ(std::set<std::uint32_t>(taken.begin(), taken.end()).size(), 100u);
  EXPECT_EQ(without, clients * fetches - 100);

  // Bob, online, was told his stock ran low.
  bool warned = false;
  for (;;) {
    auto f = bob->conn.run(bob->conn.api().next_push(std::chrono::milliseconds(500)));
    if (!f) break;
    if (f->has_prekeys_low()) warned = true;
  }
  EXPECT_TRUE(warned);

  // With none left, a session still starts (signed prekey only) and decrypts.
  auto carol = user("carol", open.url());
  carol->say("bob", "no one-time prekey left");
  EXPECT_EQ(bob->receive(1), std::vector<std::string>{"no one-time prekey left"});

  // Bob's next connection sees 0 left in Authenticated and tops up to 100.
  bob->conn.reconnect();
  EXPECT_EQ(bob->conn.authenticated.one_time_prekeys(), 0u);
  bob->publish();
  bob->conn.reconnect();
  EXPECT_EQ(bob->conn.authenticated.one_time_prekeys(), 100u);
  auto fresh = fetchers[0]->run(fetchers[0]->api().fetch_keys("bob"));
  ASSERT_TRUE(fresh);
  EXPECT_TRUE(fresh->bundles(0).has_one_time_prekey());
}

// One device cannot drain another account's one-time prekeys: past its pair's budget (3 at
// once by default) its fetches get bundles without one, and the stock stays for others.
TEST_F(e2ee_test, one_device_takes_at_most_its_pairs_budget_of_one_time_prekeys) {
  auto bob = user("bob");
  test_client greedy(io, server.url());
  greedy.register_and_login("greedy");
  std::vector<std::uint32_t> taken;
  for (int i = 0; i < 6; ++i) {
    auto r = greedy.run(greedy.api().fetch_keys("bob"));
    ASSERT_TRUE(r) << client::describe(r.error());
    ASSERT_EQ(r->bundles_size(), 1);
    EXPECT_FALSE(r->bundles(0).identity_key().empty());
    EXPECT_FALSE(r->bundles(0).signed_prekey().public_key().empty());
    if (r->bundles(0).has_one_time_prekey()) taken.push_back(r->bundles(0).one_time_prekey().id());
  }
  EXPECT_EQ(taken.size(), 3u);
  // Another device still gets one, and a session set up without one works.
  test_client other(io, server.url());
  other.register_and_login("other");
  auto r = other.run(other.api().fetch_keys("bob"));
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->bundles(0).has_one_time_prekey());
  EXPECT_EQ(std::count(taken.begin(), taken.end(), r->bundles(0).one_time_prekey().id()), 0);
  bob->conn.reconnect();
  EXPECT_EQ(bob->conn.authenticated.one_time_prekeys(), 100u - 4u);
}

TEST_F(e2ee_test, the_server_refuses_bad_keys_with_typed_errors) {
  auto bob = user("bob");
  auto good = bob->messenger->engine().full_upload(3);
  ASSERT_TRUE(good);
  auto upload = [&](const e2ee::key_upload& k) {
    return bob->conn.run(bob->conn.api().upload_keys(client::to_wire(k)));
  };
  auto code = [](const auto& r) { return r ? v2::ERROR_CODE_UNSPECIFIED : r.error().code; };

  auto forged = *good;
  forged.signed_prekey->signature[5] ^= 0x20;
  EXPECT_EQ(code(upload(forged)), v2::ERROR_CODE_BAD_SIGNATURE);
  auto short_key = *good;
  short_key.identity_key.pop_back();
  EXPECT_EQ(code(upload(short_key)), v2::ERROR_CODE_BAD_KEY);
  auto other_identity = *good;  // a new identity with no signed prekey
  other_identity.identity_key = user("carol")->messenger->engine().identity_key().value();
  other_identity.signed_prekey.reset();
  EXPECT_EQ(code(upload(other_identity)), v2::ERROR_CODE_BAD_KEY);
  auto too_many = *bob->messenger->engine().top_up(101);
  EXPECT_EQ(code(upload(too_many)), v2::ERROR_CODE_TOO_MANY_PREKEYS);
  EXPECT_TRUE(upload(*good));
  // 500 held at most: 100 were published at registration, 3 above; 4 x 100 more is over.
  int refused_at = 0;
  for (int i = 1; i <= 4 && refused_at == 0; ++i) {
    auto r = upload(*bob->messenger->engine().top_up(100));
    if (!r) {
      refused_at = i;
      EXPECT_EQ(code(r), v2::ERROR_CODE_TOO_MANY_PREKEYS) << "past the 500 held";
    }
  }
  EXPECT_EQ(refused_at, 4);

  // Nothing bad was stored: a session built on bob's bundle works.
  auto alice = user("alice");
  alice->say("bob", "keys are fine");
  EXPECT_EQ(bob->receive(1), std::vector<std::string>{"keys are fine"});

  // A user without keys, and requests before authentication.
  test_client plain(io, server.url());
  plain.register_and_login("plain");
  auto none = plain.run(plain.api().fetch_keys("plain"));
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, v2::ERROR_CODE_NO_KEYS);
  test_client anonymous(io, server.url());
  anonymous.connect();
  auto early = anonymous.run(anonymous.api().fetch_keys("bob"));
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().code, v2::ERROR_CODE_UNAUTHENTICATED);
}

// A first message to a group is a pairwise sender-key message per member and then the group
// message: past the device's send burst, the server answers RATE_LIMITED, and the client
// waits as told and sends again (the same client_msg_id), so the message gets through.
TEST_F(e2ee_test, a_first_group_message_past_the_send_burst_waits_and_gets_through) {
  // 2 at once, then 4 a second: the 4 key messages go out side by side, so 2 of them at
  // least are refused and wait. One member-list read at once, then one every 5 s: the second
  // group message's GetGroup, asked within seconds of the first's, is refused and waits. The
  // refusals are counted by the server (parley_rate_limited_total), not probed with requests
  // that would have to arrive before the next token, which a slow machine can miss.
  server_process tight({},
                       "[rate_limits]\nsend_per_device = 240\nsend_per_device_burst = 2\n"
                       "group_read_per_device = 12\ngroup_read_per_device_burst = 1\n");
  auto alice = user("alice", tight.url());
  std::vector<std::unique_ptr<secure_user>> others;
  std::vector<std::string> names;
  for (const char* name : {"bob", "carol", "dave", "erin"}) {
    others.push_back(user(name, tight.url()));
    names.emplace_back(name);
  }
  auto created = alice->conn.run(alice->messenger->create_group("five", names));
  ASSERT_TRUE(created) << client::describe(created.error());
  const auto limited = [&] { return metric(tight.port(), "parley_rate_limited_total"); };
  const auto before = limited();
  const auto sent = alice->say_to_group(created->chat_id(), "past the burst");
  EXPECT_EQ(sent.result.chat_id(), created->chat_id());
  const auto after_first = limited();
  EXPECT_GE(after_first - before, 2) << "the limit was on: key messages were refused and waited";
  // The first send took the one read; this one's GetGroup waits for the next.
  auto second = alice->conn.run(alice->messenger->send_group(created->chat_id(),
                                                             "past the reads", "second"));
  ASSERT_TRUE(second) << client::describe(second.error());
  EXPECT_GE(limited() - after_first, 1) << "the second GetGroup was refused and waited";
  for (auto& u : others) {
    const auto got = u->collect(3);
    EXPECT_TRUE(has(got, "past the burst")) << u->conn.username;
    EXPECT_TRUE(has(got, "past the reads")) << u->conn.username;
  }
}

// Members who never published keys cannot be given the sender key: the send reports them, in
// the group's member order although their key messages ran side by side
// (messenger::key_messages_in_flight), and the members with keys still read the message.
TEST_F(e2ee_test, members_without_keys_are_reported_in_order_and_the_others_read_it) {
  auto alice = user("alice");
  auto bob = user("bob");
  std::vector<std::unique_ptr<test_client>> keyless;  // registered, no keys published
  std::vector<std::string> names;
  for (int i = 0; i < 16; ++i) {
    keyless.push_back(std::make_unique<test_client>(io, server.url()));
    keyless.back()->register_and_login("nokeys" + std::to_string(i));
    names.push_back(keyless.back()->username);
    if (i == 7) names.emplace_back("bob");
  }
  auto created = alice->conn.run(alice->messenger->create_group("mixed", names));
  ASSERT_TRUE(created) << client::describe(created.error());
  std::vector<std::string> expected;
  for (const auto& m : created->members()) {
    if (m.user() != "alice" && m.user() != "bob") expected.push_back(m.user());
  }
  ASSERT_EQ(expected.size(), 16u);
  const auto sent = alice->say_to_group(created->chat_id(), "to those with keys");
  EXPECT_EQ(sent.not_reached, expected);
  EXPECT_EQ(sent.result.chat_id(), created->chat_id());
  EXPECT_TRUE(has(bob->collect(2), "to those with keys"));
}

// Three users in a group: each message is encrypted once with its sender's key, which the
// others got in their 1:1 chats. After the admin removes carol, the next message is made with
// a new key that only bob gets: carol's own real key store cannot open it, not even with the
// key she held before (restored), while bob reads it.
// Carol, removed and then added again while offline: her reconnect drains her 1:1 chat with
// alice (older than the group, so a lower chat id: it drains first) with alice's new key in
// it before the group's ADD. The key must be kept, and the message after the ADD read.
TEST_F(e2ee_test, a_member_added_again_reads_what_follows_though_the_key_drains_first) {
  auto alice = user("alice");
  auto carol = user("carol");
  alice->say("carol", "before the group");
  ASSERT_EQ(carol->receive(1), std::vector<std::string>{"before the group"});
  auto created = alice->conn.run(alice->messenger->create_group("pair", {"carol"}));
  ASSERT_TRUE(created) << client::describe(created.error());
  const std::uint64_t chat = created->chat_id();
  alice->say_to_group(chat, "m1");
  EXPECT_EQ(carol->collect(2),
            (std::vector<std::string>{"* alice created the group \"pair\" with carol", "m1"}));

  auto removed =
      alice->conn.run(alice->messenger->update_group(chat, v2::GROUP_CHANGE_REMOVE, "carol"));
  ASSERT_TRUE(removed) << client::describe(removed.error());
  EXPECT_EQ(carol->collect(1), std::vector<std::string>{"* alice removed carol"});
  EXPECT_FALSE(carol->store->group(chat)->member);

  carol->conn.disconnect();
  auto added = alice->conn.run(alice->messenger->update_group(chat, v2::GROUP_CHANGE_ADD, "carol"));
  ASSERT_TRUE(added) << client::describe(added.error());
  alice->say_to_group(chat, "m2 after the re-add");

  carol->reconnect();
  carol->seen.clear();
  EXPECT_EQ(carol->collect(2),
            (std::vector<std::string>{"* alice added carol", "m2 after the re-add"}));
  EXPECT_TRUE(carol->store->group(chat)->member);
  EXPECT_TRUE(carol->store->pending_in(chat).empty());
  // What made it hard: the key (in the 1:1 chat) came before the ADD.
  std::size_t key_at = carol->seen.size(), add_at = carol->seen.size();
  for (std::size_t i = 0; i < carol->seen.size(); ++i) {
    const auto& e = carol->seen[i];
    if (e.chat_id() != chat && key_at == carol->seen.size()) key_at = i;
    if (e.chat_id() == chat && e.has_event()) add_at = i;
  }
  EXPECT_LT(key_at, add_at) << "the drain did not bring the key first: the test proves nothing";
}

TEST_F(e2ee_test, group_messages_use_sender_keys_and_a_removal_rotates_them) {
  auto alice = user("alice");
  auto bob = user("bob");
  auto carol = user("carol");
  auto created =
      alice->conn.run(alice->messenger->create_group("trio", {"bob", "carol"}));
  ASSERT_TRUE(created) << client::describe(created.error());
  const std::uint64_t chat = created->chat_id();
  ASSERT_NE(chat, 0u);
  EXPECT_EQ(created->members_size(), 3);
  ASSERT_TRUE(alice->store->group(chat));
  EXPECT_EQ(alice->store->group(chat)->name, "trio");

  const auto first = alice->say_to_group(chat, "hello trio");
  EXPECT_TRUE(first.not_reached.empty());
  EXPECT_EQ(first.result.chat_id(), chat);
  const std::string created_line = "* alice created the group \"trio\" with bob, carol";
  for (auto* member : {bob.get(), carol.get()}) {
    const auto got = member->collect(2);
    EXPECT_TRUE(has(got, created_line)) << member->conn.username;
    EXPECT_TRUE(has(got, "hello trio")) << member->conn.username;
    ASSERT_TRUE(member->store->group(chat));
    EXPECT_EQ(member->store->group(chat)->name, "trio");
    EXPECT_TRUE(member->store->pending_in(chat).empty());
  }
  // One ciphertext for the group, the same at bob's and carol's: a SenderKeyMessage.
  auto group_payload = [&](secure_user& u, std::uint64_t message_id) {
    for (const auto& e : u.seen) {
      if (e.message_id() == message_id) {
        EXPECT_EQ(e.type(), v2::CIPHER_TYPE_SENDER_KEY_MESSAGE);
        EXPECT_EQ(e.chat_id(), chat);
        return e.payload();
      }
    }
    ADD_FAILURE() << u.conn.username << " was not pushed message " << message_id;
    return std::string();
  };
  EXPECT_EQ(group_payload(*bob, first.result.message_id()),
            group_payload(*carol, first.result.message_id()));

  // Everybody speaks; everybody reads the others.
  bob->say_to_group(chat, "bob here");
  carol->say_to_group(chat, "carol here");
  auto at_alice = alice->collect(3);  // her own CREATE event, bob's and carol's messages
  EXPECT_TRUE(has(at_alice, "bob here"));
  EXPECT_TRUE(has(at_alice, "carol here"));
  EXPECT_TRUE(has(bob->collect(1), "carol here"));
  EXPECT_TRUE(has(carol->collect(1), "bob here"));
  // The history of the group, at bob's: every message with its sender, in the chat's order.
  const auto history = bob->store->chat_history(chat, 20);
  std::vector<std::string> lines;
  for (const auto& m : history) lines.push_back(m.peer + ": " + m.text);
  EXPECT_EQ(lines, (std::vector<std::string>{
                       "alice: alice created the group \"trio\" with bob, carol",
                       "alice: hello trio", "bob: bob here", "carol: carol here"}));

  // What carol holds of alice's current key, before she is removed.
  const auto group = e2ee::group_of(chat);
  const auto alice_device = static_cast<std::int32_t>(alice->conn.device_id);
  const auto carol_copy = carol->store->sender_key(group, "alice", alice_device);
  ASSERT_TRUE(carol_copy);

  auto removed = alice->conn.run(
      alice->messenger->update_group(chat, v2::GROUP_CHANGE_REMOVE, "carol"));
  ASSERT_TRUE(removed) << client::describe(removed.error());
  EXPECT_EQ(removed->members_size(), 2);
  const auto after = alice->say_to_group(chat, "carol cannot read this");

  // Bob reads it (the removal, then the new key in his 1:1 chat with alice, then the message).
  const auto at_bob = bob->collect(2);
  EXPECT_TRUE(has(at_bob, "* alice removed carol"));
  EXPECT_TRUE(has(at_bob, "carol cannot read this"));
  // Carol gets the event about herself and nothing after it; her device forgets the group's
  // keys.
  const auto at_carol = carol->collect(1);
  EXPECT_EQ(at_carol, std::vector<std::string>{"* alice removed carol"});
  EXPECT_FALSE(carol->store->group(chat)->member);
  EXPECT_FALSE(carol->store->sender_key(group, "alice", alice_device));

  // The ciphertext as bob was pushed it, fed to carol's engine: not with her store as it is,
  // and not with alice's old key put back either: it was made with a new one.
  const auto payload = group_payload(*bob, after.result.message_id());
  ASSERT_FALSE(payload.empty());
  const e2ee::group_sender from_alice{group, "alice", alice_device};
  auto opened = carol->messenger->engine().group_decrypt(from_alice, payload);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), e2ee::errc::no_sender_key);
  carol->store->put_sender_key(group, "alice", alice_device, *carol_copy);
  opened = carol->messenger->engine().group_decrypt(from_alice, payload);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), e2ee::errc::no_sender_key);
  // While the key she had still opens what was sent before (the first message, which her
  // device already used: a duplicate, proving it is the key of that message).
  opened = carol->messenger->engine().group_decrypt(
      from_alice, group_payload(*carol, first.result.message_id()));
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), e2ee::errc::duplicate_message);

  // The server refuses carol's messages to the group now (she is no longer a member).
  auto refused = carol->conn.run(carol->messenger->send_group(chat, "let me in", "x1"));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, v2::ERROR_CODE_NOT_FOUND);

  // The status of alice's first message counts the current members who were members when it
  // was sent: bob, who has it (collect acked it).
  auto status = alice->conn.run(
      alice->conn.api().status_result(chat, first.result.seq(), /*detail=*/true));
  ASSERT_TRUE(status) << client::describe(status.error());
  EXPECT_EQ(status->recipients(), 1u);
  EXPECT_EQ(status->delivered(), 1u);
  ASSERT_EQ(status->delivered_to_size(), 1);
  EXPECT_EQ(status->delivered_to(0), "bob");
}

// A group send that failed after it was sealed and is retried after a removal is sealed again
// with the new key: the ciphertext kept for retries is kept with the key it was made with.
// (The first attempt fails for its size, on a server that takes 2,048 bytes of payload; the
// retry goes to the same data on a server that takes the default.)
TEST_F(e2ee_test, a_group_send_retried_after_a_removal_is_sealed_with_the_new_key) {
  const std::string small_payloads = "[limits]\nmax_payload_bytes = 2048\nmax_frame_bytes = 4096\n";
  server_process small({}, small_payloads);
  auto alice = user("alice", small.url());
  auto bob = user("bob", small.url());
  auto carol = user("carol", small.url());
  auto created = alice->conn.run(alice->messenger->create_group("trio", {"bob", "carol"}));
  ASSERT_TRUE(created) << client::describe(created.error());
  const std::uint64_t chat = created->chat_id();
  alice->say_to_group(chat, "hello trio");
  EXPECT_TRUE(has(carol->collect(2), "hello trio"));
  const auto group = e2ee::group_of(chat);
  const auto alice_device = static_cast<std::int32_t>(alice->conn.device_id);
  const auto carol_copy = carol->store->sender_key(group, "alice", alice_device);
  ASSERT_TRUE(carol_copy);

  const std::string long_text(3000, 'x');
  auto too_long = alice->conn.run(alice->messenger->send_group(chat, long_text, "long-1"));
  ASSERT_FALSE(too_long) << "the small server took a 3,000-byte text";
  ASSERT_EQ(too_long.error().what, client::client_error::kind::server)
      << client::describe(too_long.error());
  auto removed =
      alice->conn.run(alice->messenger->update_group(chat, v2::GROUP_CHANGE_REMOVE, "carol"));
  ASSERT_TRUE(removed) << client::describe(removed.error());

  small.restart("");
  for (auto* u : {alice.get(), bob.get()}) {
    u->conn.retarget(small.url());
    u->reconnect();
  }
  auto retried = alice->conn.run(alice->messenger->send_group(chat, long_text, "long-1"));
  ASSERT_TRUE(retried) << client::describe(retried.error());
  EXPECT_TRUE(has(bob->collect(3), long_text));

  std::string payload;
  for (const auto& e : bob->seen)
    if (e.message_id() == retried->result.message_id()) payload = e.payload();
  ASSERT_FALSE(payload.empty()) << "bob was not pushed the retried message";
  carol->store->put_sender_key(group, "alice", alice_device, *carol_copy);
  auto opened = carol->messenger->engine().group_decrypt({group, "alice", alice_device}, payload);
  ASSERT_FALSE(opened) << "carol's copy of the retired key opens the retried message";
  EXPECT_EQ(opened.error(), e2ee::errc::no_sender_key);
}

TEST_F(e2ee_test, no_plaintext_on_the_servers_disk_or_on_the_wire) {
  recording_relay relay(server.port());
  auto alice = user("zq_alice", relay.url());
  auto bob = user("zq_bob", relay.url());
  const std::vector<std::string> secrets{"Xylophone-quartz 7431", "meet at the old mill at dawn",
                                         "Kohlrabi-ultramarine 9902"};
  alice->say("zq_bob", secrets[0]);
  alice->say("zq_bob", secrets[1]);
  EXPECT_EQ(bob->receive(2), (std::vector<std::string>{secrets[0], secrets[1]}));
  bob->say("zq_alice", secrets[2]);
  EXPECT_EQ(alice->receive(1), std::vector<std::string>{secrets[2]});
  alice->conn.disconnect();
  bob->conn.disconnect();
  ASSERT_EQ(server.terminate(), 0);  // flushes everything to the data directory

  const std::string disk = read_tree(server.data_dir());
  const std::string wire = relay.to_clients() + relay.to_server();
  // The searches can find things: what the server must see in the clear is there.
  ASSERT_NE(disk.find("zq_alice"), std::string::npos);
  ASSERT_NE(relay.to_clients().find("zq_alice"), std::string::npos);  // Envelope.from
  for (const auto& s : secrets) {
    EXPECT_EQ(disk.find(s), std::string::npos) << s;
    EXPECT_EQ(wire.find(s), std::string::npos) << s;
    EXPECT_EQ(disk.find(s.substr(0, 10)), std::string::npos) << s;
  }
  // The devices themselves do keep the text, in their 0600 local stores.
  EXPECT_NE(read_tree(bob->file.parent_path()).find(secrets[0]), std::string::npos);
}

}  // namespace
}  // namespace parley::test
