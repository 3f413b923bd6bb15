// Groups end to end through a real parleyd: membership rules as the protocol answers them,
// fan-out to online and offline members, merged receipts and "delivered to N of M", a group of
// the full 1,024 members, and a kill -9 in the middle of a fan-out. The payloads are opaque
// bytes (the server cannot tell them from SenderKeyMessages); e2ee_test.cpp has the real ones.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>

#include "test_client.hpp"

namespace parley::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* no_rate_limits =
    "[rate_limits]\nregister_per_address = 0\nregister_global = 0\nsend_per_device = 0\n";

std::vector<std::string> member_names(const v2::GroupInfo& g) {
  std::vector<std::string> out;
  for (const auto& m : g.members()) out.push_back(m.user() + (m.admin() ? "*" : ""));
  return out;
}

class groups : public ::testing::Test {
 protected:
  explicit groups(std::string extra_config = {})
      : server({}, std::string(no_rate_limits) + extra_config) {}

  boost::asio::io_context io;
  server_process server;

  std::unique_ptr<test_client> online_user(const std::string& name) {
    auto c = std::make_unique<test_client>(io, server.url());
    c->register_and_login(name);
    c->drain();
    return c;
  }
  // `n` accounts registered on a few connections (Register is allowed before Authenticate,
  // one at a time per connection), not logged in.
  std::vector<std::unique_ptr<test_client>> registered(const std::string& prefix, int n) {
    std::vector<std::unique_ptr<test_client>> out;
    constexpr int per_connection = 128;
    for (int first = 0; first < n; first += per_connection) {
      client::client reg(io.get_executor());
      auto connected = block_on(io, reg.connect(server.url()));
      EXPECT_TRUE(connected);
      for (int i = first; i < std::min(n, first + per_connection); ++i) {
        auto c = std::make_unique<test_client>(io, server.url());
        c->username = prefix + std::to_string(i);
        auto r = block_on(io, reg.register_account(c->username));
        EXPECT_TRUE(r) << c->username << ": " << client::describe(r.error());
        if (!r) return out;
        c->device_id = r->device_id();
        c->token = r->token();
        out.push_back(std::move(c));
      }
      block_on(io, reg.close());
    }
    return out;
  }
  v2::SendResult say(test_client& c, std::uint64_t chat, const std::string& id) {
    auto r = c.run(c.api().send_to_chat(chat, id, "sk:" + id));
    EXPECT_TRUE(r) << c.username << " " << id << ": " << client::describe(r.error());
    return r ? *r : v2::SendResult{};
  }
  // Pushes to `c` until it has the chat's envelopes up to `seq` (what it got, in order).
  std::vector<v2::Envelope> receive_up_to(test_client& c, std::uint64_t chat, std::uint64_t seq) {
    std::vector<v2::Envelope> got;
    while (got.empty() || got.back().seq() < seq) {
      auto f = c.run(c.api().next_push(10s));
      if (!f) {
        ADD_FAILURE() << c.username << " waited for seq " << seq << ": "
                      << client::describe(f.error());
        break;
      }
      if (f->has_envelope() && f->envelope().chat_id() == chat) got.push_back(f->envelope());
    }
    return got;
  }
  // The merged receipts pushed to `c` until its view of `chat` has delivered >= `seq`.
  std::uint64_t wait_delivered(test_client& c, std::uint64_t chat, std::uint64_t seq) {
    std::uint64_t delivered = 0;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (delivered < seq && std::chrono::steady_clock::now() < deadline) {
      auto f = c.run(c.api().next_push(2s));
      if (!f) continue;
      if (!f->has_receipts()) continue;
      for (const auto& r : f->receipts().receipts()) {
        EXPECT_EQ(r.user(), "") << "a group's receipts are merged";
        if (r.chat_id() == chat && r.status() == v2::MESSAGE_STATUS_DELIVERED)
          delivered = std::max(delivered, r.up_to_seq());
      }
    }
    return delivered;
  }
};

TEST_F(groups, the_protocol_answers_each_membership_rule_with_its_code) {
  auto alice = online_user("alice");
  auto bob = online_user("bob");
  auto carol = online_user("carol");
  auto dave = online_user("dave");
  auto g = alice->run(alice->api().create_group("team", {"bob", "carol"}));
  ASSERT_TRUE(g) << client::describe(g.error());
  EXPECT_EQ(member_names(*g), (std::vector<std::string>{"alice*", "bob", "carol"}));
  EXPECT_EQ(g->seq(), 1u);
  const auto chat = g->chat_id();

  EXPECT_EQ(code_of(dave->run(dave->api().send_to_chat(chat, "d1", "x"))), v2::ERROR_CODE_NOT_FOUND);
  EXPECT_EQ(code_of(dave->run(dave->api().history_of_chat(chat, 0, 10))), v2::ERROR_CODE_NOT_FOUND);
  EXPECT_EQ(code_of(dave->run(dave->api().get_group(chat))), v2::ERROR_CODE_NOT_FOUND);
  EXPECT_EQ(code_of(bob->run(bob->api().update_group(chat, v2::GROUP_CHANGE_ADD, "dave"))),
            v2::ERROR_CODE_NOT_ADMIN);
  EXPECT_EQ(code_of(alice->run(alice->api().update_group(chat, v2::GROUP_CHANGE_ADD, "bob"))),
            v2::ERROR_CODE_ALREADY_MEMBER);
  EXPECT_EQ(code_of(alice->run(alice->api().update_group(chat, v2::GROUP_CHANGE_REMOVE, "dave"))),
            v2::ERROR_CODE_NOT_MEMBER);
  EXPECT_EQ(code_of(alice->run(alice->api().update_group(chat, v2::GROUP_CHANGE_ADD, "nobody"))),
            v2::ERROR_CODE_UNKNOWN_USER);
  EXPECT_EQ(code_of(alice->run(alice->api().create_group("", {"bob"}))),
            v2::ERROR_CODE_INVALID_ARGUMENT);
  EXPECT_EQ(code_of(alice->run(alice->api().create_group(std::string(65, 'n'), {"bob"}))),
            v2::ERROR_CODE_INVALID_ARGUMENT);
  // The idempotency key: required, 1-64 bytes; a retry gets the group back, made once.
  v2::Frame no_id;
  no_id.mutable_create_group()->set_name("team");
  EXPECT_EQ(code_of(alice->run(alice->api().request(no_id))), v2::ERROR_CODE_INVALID_ARGUMENT);
  EXPECT_EQ(code_of(alice->run(alice->api().create_group("team", {"bob"}, std::string(65, 'r')))),
            v2::ERROR_CODE_INVALID_ARGUMENT);
  auto made = alice->run(alice->api().create_group("again", {"bob"}, "retry-me"));
  ASSERT_TRUE(made);
  EXPECT_FALSE(made->duplicate());
  auto retried = alice->run(alice->api().create_group("again", {"bob"}, "retry-me"));
  ASSERT_TRUE(retried);
  EXPECT_TRUE(retried->duplicate());
  EXPECT_EQ(retried->chat_id(), made->chat_id());
  EXPECT_EQ(retried->seq(), 1u);
  auto history = bob->run(bob->api().history_of_chat(made->chat_id(), 0, 10));
  ASSERT_TRUE(history);
  EXPECT_EQ(history->messages_size(), 1);  // one CREATE
  // A group takes sender-key messages only; a user is never sent one.
  EXPECT_EQ(code_of(bob->run(bob->api().send_to_chat(chat, "b1", "x",
                                                      v2::CIPHER_TYPE_SIGNAL_MESSAGE))),
            v2::ERROR_CODE_INVALID_ARGUMENT);
  EXPECT_EQ(code_of(bob->run(bob->api().send("carol", "b2", "x",
                                              v2::CIPHER_TYPE_SENDER_KEY_MESSAGE))),
            v2::ERROR_CODE_INVALID_ARGUMENT);

  // The events reach the members in the log's order, with who did what.
  auto renamed = alice->run(alice->api().update_group(chat, v2::GROUP_CHANGE_RENAME, {}, "renamed"));
  ASSERT_TRUE(renamed);
  EXPECT_EQ(renamed->name(), "renamed");
  auto got = receive_up_to(*bob, chat, renamed->seq());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].event().change(), v2::GROUP_CHANGE_CREATE);
  EXPECT_EQ(got[0].from(), "alice");
  EXPECT_EQ(got[1].event().change(), v2::GROUP_CHANGE_RENAME);
  EXPECT_EQ(got[1].event().name(), "renamed");
  EXPECT_EQ(got[1].type(), v2::CIPHER_TYPE_UNSPECIFIED);
  EXPECT_TRUE(got[1].payload().empty());
}

TEST_F(groups, fan_out_reaches_online_and_offline_members_once_each_in_order) {
  auto alice = online_user("alice");
  auto bob = online_user("bob");
  auto carol = online_user("carol");
  auto dave = online_user("dave");
  dave->disconnect();  // offline for the whole fan-out
  auto g = alice->run(alice->api().create_group("team", {"bob", "carol", "dave"}));
  ASSERT_TRUE(g);
  const auto chat = g->chat_id();
  constexpr int messages = 30;
  std::uint64_t last = 0;
  for (int i = 0; i < messages; ++i) last = say(*alice, chat, "m" + std::to_string(i)).seq();
  ASSERT_EQ(last, messages + 1u);
  for (auto* member : {bob.get(), carol.get()}) {
    auto got = receive_up_to(*member, chat, last);
    ASSERT_EQ(got.size(), messages + 1u) << member->username;
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].seq(), i + 1) << member->username << ": in order, no gap, no repeat";
      if (i > 0) {
        EXPECT_EQ(got[i].payload(), "sk:m" + std::to_string(i - 1));
      }
    }
    member->ack({{chat, last}});
  }
  // The offline member drains it all on reconnect, and nothing else.
  dave->reconnect();
  auto drained = test_client::envelopes_in(dave->drain());
  ASSERT_EQ(drained.size(), messages + 1u);
  for (std::size_t i = 0; i < drained.size(); ++i) EXPECT_EQ(drained[i].seq(), i + 1);
  auto status = alice->run(alice->api().status_result(chat, last, true));
  ASSERT_TRUE(status);
  EXPECT_EQ(status->recipients(), 3u);
  EXPECT_EQ(status->delivered(), 2u);
  EXPECT_EQ(status->status(), v2::MESSAGE_STATUS_SENT);
  dave->ack({{chat, last}});
  // Everyone has it: one merged receipt tells the sender, and GetStatus agrees.
  EXPECT_EQ(wait_delivered(*alice, chat, last), last);
  status = alice->run(alice->api().status_result(chat, last, true));
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status(), v2::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(status->delivered(), 3u);
  std::multiset<std::string> who(status->delivered_to().begin(), status->delivered_to().end());
  EXPECT_EQ(who, (std::multiset<std::string>{"bob", "carol", "dave"}));
  // A reconnect of a member that acked everything drains nothing again.
  bob->reconnect();
  EXPECT_TRUE(test_client::envelopes_in(bob->drain()).empty());
}

// The last admin leaves: the server promotes the oldest member, and the leaver can ack the
// seq its GroupInfo names (its LEAVE, not the PROMOTE after it, which it is not sent).
TEST_F(groups, the_last_admin_leaving_hands_the_group_to_the_oldest_member) {
  auto alice = online_user("alice");
  auto bob = online_user("bob");
  auto carol = online_user("carol");
  auto g = alice->run(alice->api().create_group("team", {"bob", "carol"}));
  ASSERT_TRUE(g);
  const auto chat = g->chat_id();
  auto left = alice->run(alice->api().update_group(chat, v2::GROUP_CHANGE_LEAVE, {}));
  ASSERT_TRUE(left) << client::describe(left.error());
  EXPECT_EQ(member_names(*left), (std::vector<std::string>{"bob*", "carol"}));
  EXPECT_EQ(left->seq(), 2u) << "its LEAVE";
  alice->ack({{chat, left->seq()}});
  auto got = receive_up_to(*carol, chat, 3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[1].event().change(), v2::GROUP_CHANGE_LEAVE);
  EXPECT_EQ(got[1].event().user(), "alice");
  EXPECT_EQ(got[2].event().change(), v2::GROUP_CHANGE_PROMOTE);
  EXPECT_EQ(got[2].event().user(), "bob");
  EXPECT_EQ(got[2].from(), "") << "by the server";
  EXPECT_EQ(code_of(alice->run(alice->api().get_group(chat))), v2::ERROR_CODE_NOT_FOUND);
  auto added = bob->run(bob->api().update_group(chat, v2::GROUP_CHANGE_ADD, "alice"));
  EXPECT_TRUE(added) << "the new admin can act";
}

TEST_F(groups, a_removed_member_gets_its_removal_and_nothing_after_it) {
  auto alice = online_user("alice");
  auto bob = online_user("bob");
  auto carol = online_user("carol");
  auto g = alice->run(alice->api().create_group("team", {"bob", "carol"}));
  ASSERT_TRUE(g);
  const auto chat = g->chat_id();
  auto removed = alice->run(alice->api().update_group(chat, v2::GROUP_CHANGE_REMOVE, "bob"));
  ASSERT_TRUE(removed);
  EXPECT_EQ(member_names(*removed), (std::vector<std::string>{"alice*", "carol"}));
  auto got = receive_up_to(*bob, chat, removed->seq());
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back().event().change(), v2::GROUP_CHANGE_REMOVE);
  EXPECT_EQ(got.back().event().user(), "bob");
  bob->ack({{chat, removed->seq()}});
  const auto after = say(*alice, chat, "after");
  EXPECT_EQ(receive_up_to(*carol, chat, after.seq()).back().payload(), "sk:after");
  auto pushed = bob->run(bob->api().next_push(500ms));
  EXPECT_FALSE(pushed && pushed->has_envelope()) << pushed->ShortDebugString();
  EXPECT_EQ(code_of(bob->run(bob->api().history_of_chat(chat, 0, 10))), v2::ERROR_CODE_NOT_FOUND);
  EXPECT_EQ(code_of(bob->run(bob->api().send_to_chat(chat, "b", "x"))), v2::ERROR_CODE_NOT_FOUND);
  bob->reconnect();
  EXPECT_TRUE(test_client::envelopes_in(bob->drain()).empty()) << "nothing after the removal";
}

// The member-list reads (GetGroup, GetStatus with detail) share a per-device bucket: past it,
// RATE_LIMITED with the wait; GetStatus without detail and the other members' buckets are
// not touched.
class groups_with_two_reads : public groups {
 protected:
  groups_with_two_reads()
      : groups("group_read_per_device = 6\ngroup_read_per_device_burst = 2\n") {}
};

TEST_F(groups_with_two_reads, member_list_reads_are_rate_limited_per_device) {
  auto alice = online_user("alice");
  auto bob = online_user("bob");
  auto g = alice->run(alice->api().create_group("team", {"bob"}));
  ASSERT_TRUE(g) << client::describe(g.error());
  const auto chat = g->chat_id();
  const auto sent = say(*alice, chat, "m1");
  ASSERT_TRUE(alice->run(alice->api().get_group(chat)));
  ASSERT_TRUE(alice->run(alice->api().status_result(chat, sent.seq(), true)));
  auto third = alice->run(alice->api().get_group(chat));
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, v2::ERROR_CODE_RATE_LIMITED);
  EXPECT_GT(third.error().retry_after_ms, 0u);
  EXPECT_LE(third.error().retry_after_ms, 10'000u);  // 6 a minute: one every 10 s
  EXPECT_EQ(code_of(alice->run(alice->api().status_result(chat, sent.seq(), true))),
            v2::ERROR_CODE_RATE_LIMITED);
  auto counts = alice->run(alice->api().status_result(chat, sent.seq(), false));
  ASSERT_TRUE(counts) << "GetStatus without detail is not counted";
  EXPECT_EQ(counts->recipients(), 1u);
  EXPECT_TRUE(bob->run(bob->api().get_group(chat))) << "bob's bucket is his own";
  // The refusals applied nothing: the group is as it was.
  auto info = bob->run(bob->api().get_group(chat));
  ASSERT_TRUE(info);
  EXPECT_EQ(member_names(*info), (std::vector<std::string>{"alice*", "bob"}));
}

class groups_with_slow_receipts : public groups {
 protected:
  groups_with_slow_receipts() : groups("[limits]\ngroup_receipts_ms = 2000\n") {}
};

// limits.group_receipts_ms: a group's merged receipts are computed at most once an interval,
// so two acks one after the other reach the sender as two pushes at least that far apart
// (with the default 100 ms, well under a second).
TEST_F(groups_with_slow_receipts, merged_receipts_wait_for_the_interval) {
  auto alice = online_user("alice");
  auto bob = online_user("bob");
  auto g = alice->run(alice->api().create_group("team", {"bob"}));
  ASSERT_TRUE(g) << client::describe(g.error());
  const auto chat = g->chat_id();
  auto deliver = [&](const std::string& id) {
    const auto sent = say(*alice, chat, id);
    receive_up_to(*bob, chat, sent.seq());
    bob->ack({client::chat_cursor{chat, sent.seq()}});
    EXPECT_EQ(wait_delivered(*alice, chat, sent.seq()), sent.seq()) << id;
  };
  deliver("m1");
  const auto first = std::chrono::steady_clock::now();
  deliver("m2");
  // The server spaces them 2 s apart; the client's clock starts when the first arrived,
  // which a loaded machine may delay (up to 0.8 s allowed here).
  EXPECT_GE(std::chrono::steady_clock::now() - first, 1200ms)
      << "the second merged receipt came before the interval had passed";
}

// The full size: 1,024 members online, one message reaches all 1,023 others, their acks merge
// into one receipt for the sender, and the 1,025th member is refused with nothing applied.
TEST_F(groups, a_group_of_1024_members_end_to_end) {
  constexpr int size = 1024;
  auto members = registered("member", size + 1);  // the last one is the 1,025th
  ASSERT_EQ(members.size(), size + 1u);
  for (int i = 0; i < size; ++i) {
    members[i]->reconnect();
    members[i]->drain();
  }
  std::vector<std::string> names;
  for (int i = 1; i < size; ++i) names.push_back(members[i]->username);
  auto& creator = *members[0];
  auto g = creator.run(creator.api().create_group("everyone", names));
  ASSERT_TRUE(g) << client::describe(g.error());
  ASSERT_EQ(g->members_size(), size);
  const auto chat = g->chat_id();
  const auto sent = say(creator, chat, "hello all");
  ASSERT_EQ(sent.seq(), 2u);
  for (int i = 1; i < size; ++i) {
    auto got = receive_up_to(*members[i], chat, 2);
    ASSERT_EQ(got.size(), 2u) << members[i]->username;
    EXPECT_EQ(got[1].payload(), "sk:hello all");
    members[i]->api().ack_async({{chat, 2}});
  }
  EXPECT_EQ(wait_delivered(creator, chat, 2), 2u);
  auto status = creator.run(creator.api().status_result(chat, 2, false));
  ASSERT_TRUE(status);
  EXPECT_EQ(status->recipients(), size - 1u);
  EXPECT_EQ(status->delivered(), size - 1u);

  auto full = creator.run(creator.api().update_group(chat, v2::GROUP_CHANGE_ADD,
                                                      members[size]->username));
  EXPECT_EQ(code_of(full), v2::ERROR_CODE_GROUP_FULL);
  auto info = creator.run(creator.api().get_group(chat));
  ASSERT_TRUE(info);
  EXPECT_EQ(info->members_size(), size);
  auto history = creator.run(creator.api().history_of_chat(chat, 0, 10));
  ASSERT_TRUE(history);
  EXPECT_EQ(history->messages_size(), 2) << "the refused add appended nothing";
}

// kill -9 while a fan-out is in flight: every message the sender got a SendResult for (✓)
// reaches every member after the restart; each member's seqs have no gap and nothing is
// stored twice.
TEST_F(groups, kill9_during_a_fan_out_loses_no_acknowledged_message) {
  auto alice = online_user("alice");
  std::vector<std::unique_ptr<test_client>> others;
  std::vector<std::string> names;
  for (int i = 0; i < 8; ++i) {
    others.push_back(online_user("member" + std::to_string(i)));
    names.push_back(others.back()->username);
  }
  auto g = alice->run(alice->api().create_group("team", names));
  ASSERT_TRUE(g);
  const auto chat = g->chat_id();
  // 300 sends in flight; the server dies while they are, once the first has its ✓ (however
  // slow the build: under a sanitizer a send takes longer than in release).
  std::vector<std::future<client::result<v2::SendResult>>> sends;
  auto spawn = [&](int i) {
    sends.push_back(boost::asio::co_spawn(
        io, alice->api().send_to_chat(chat, "k" + std::to_string(i), "sk:" + std::to_string(i)),
        boost::asio::use_future));
  };
  for (int i = 0; i < 150; ++i) spawn(i);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (sends.front().wait_for(0s) != std::future_status::ready &&
         std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_one_for(10ms);
  }
  for (int i = 150; i < 300; ++i) spawn(i);
  io.restart();
  io.run_for(2ms);
  server.kill9();
  std::set<std::uint64_t> acknowledged;
  for (auto& s : sends) {
    while (s.wait_for(0s) != std::future_status::ready) {
      io.restart();
      io.run_one_for(50ms);
    }
    auto r = s.get();
    if (r) acknowledged.insert(r->seq());
  }
  server.restart();
  for (auto& m : others) {
    auto fresh = std::make_unique<test_client>(io, server.url());
    fresh->login_as(*m);
    auto got = test_client::envelopes_in(fresh->drain(60s));
    std::set<std::uint64_t> seqs;
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].seq(), i + 1) << m->username << ": in order, no gap";
      seqs.insert(got[i].seq());
    }
    EXPECT_EQ(seqs.size(), got.size()) << "nothing twice";
    for (auto seq : acknowledged) EXPECT_TRUE(seqs.count(seq)) << m->username << " lost " << seq;
  }
  EXPECT_FALSE(acknowledged.empty()) << "some sends completed before the kill";
}

}  // namespace
}  // namespace parley::test
