// What the PostgreSQL store promises beyond the Store contract (store_contract_test.cpp): two
// nodes writing to one database at once. Each test opens two stores (node ids 1 and 2) on
// one schema of the run's PostgreSQL server (the ctest fixture postgres_start).
#include "store/postgresql/postgresql_store.hpp"

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <future>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "common/snowflake.hpp"
#include "postgres_test_server.hpp"
#include "store/postgresql/pg_connection.hpp"
#include "store/postgresql/pg_schema.hpp"
#include "store/store_test_calls.hpp"

namespace parley::store {
namespace {

using test_calls::in_flight;
using test_calls::wait_for;
using test_calls::writer_gate;

class two_nodes : public ::testing::Test {
 protected:
  two_nodes() {
    std::random_device rd;
    conninfo = test_support::postgres_database(
        std::to_string(rd()) + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    for (std::uint64_t node : {1, 2}) {
      postgresql_options o;
      o.conninfo = conninfo;
      o.node_id = node;
      (node == 1 ? a : b) = std::make_unique<postgresql_store>(o);
    }
  }

  registration user(store& s, const std::string& name) {
    sha256_digest h{};
    auto r = wait_for<registration>([&](auto done) { s.register_account({name, h}, done); });
    EXPECT_TRUE(r) << name;
    return r ? *r : registration{};
  }

  // `from` (named `name`) sends `to` its first message ("x"): their chat, at seq 1.
  result<send_outcome> first_message(store& s, const registration& from, const std::string& name,
                                     const std::string& to) {
    return wait_for<send_outcome>([&](auto done) {
      s.send({from.user, from.device, name, {0, to}, "first to " + to, "x", 1, 0, {}}, done);
    });
  }

  // A third node whose writer `gate` can hold.
  std::unique_ptr<postgresql_store> gated_node(writer_gate& gate) {
    postgresql_options o;
    o.conninfo = conninfo;
    o.node_id = 3;
    o.on_commit = [hold = gate.hook()](std::chrono::nanoseconds, std::size_t) { hold(); };
    return std::make_unique<postgresql_store>(o);
  }

  // Holds the node's writer with a request of its own (`hold`), then queues `requests`, which
  // are then taken as one group once the gate is released.
  template <class Hold, class Requests>
  void in_one_group(writer_gate& gate, Hold hold, Requests requests) {
    gate.arm();
    hold();
    const bool held = gate.wait_until_held();
    if (held) requests();
    gate.open();
    ASSERT_TRUE(held) << "the writer never committed";
  }

  // Runs SQL of the test's own (a trigger) in the stores' schema.
  void run_sql(const std::string& sql) {
    pg::connection db;
    std::string error;
    ASSERT_TRUE(db.open(conninfo, error)) << error;
    ASSERT_TRUE(db.run(sql)) << db.error_message();
  }
  // The one value a query of the test's own returns, as text ("" if not exactly one row).
  std::string one_value(const std::string& sql) {
    pg::connection db;
    std::string error;
    EXPECT_TRUE(db.open(conninfo, error)) << error;
    auto r = db.exec(sql);
    EXPECT_TRUE(r && r->size() == 1) << sql;
    return r && r->size() == 1 ? std::string(r->text(0, 0)) : std::string();
  }

  std::string conninfo;
  std::unique_ptr<postgresql_store> a, b;
};

TEST_F(two_nodes, appends_to_one_chat_from_both_get_every_seq_once) {
  const auto alice = user(*a, "alice");
  const auto bob = user(*b, "bob");
  // The pair's first messages from both nodes at once: one chat, not two.
  in_flight<send_outcome> first;
  a->send({alice.user, alice.device, "alice", {0, "bob"}, "a-first", "x", 1, 0, {}}, first.slot());
  b->send({bob.user, bob.device, "bob", {0, "alice"}, "b-first", "y", 1, 0, {}}, first.slot());
  ASSERT_TRUE(first.wait_until_completed(2));
  const auto firsts = first.all();
  ASSERT_TRUE(firsts[0] && firsts[1]);
  EXPECT_EQ(firsts[0]->chat, firsts[1]->chat);
  const chat_id chat = firsts[0]->chat;

  constexpr int per_node = 150;
  in_flight<send_outcome> sends;
  for (int i = 0; i < per_node; ++i) {
    a->send({alice.user, alice.device, "alice", {chat, {}}, "a" + std::to_string(i), "x", 1, 0, {}},
            sends.slot());
    b->send({bob.user, bob.device, "bob", {chat, {}}, "b" + std::to_string(i), "y", 1, 0, {}},
            sends.slot());
  }
  ASSERT_TRUE(sends.wait_until_completed(2 * per_node));
  std::set<std::uint64_t> seqs{firsts[0]->seq, firsts[1]->seq};
  for (const auto& r : sends.all()) {
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_TRUE(seqs.insert(r->seq).second) << "seq " << r->seq << " handed out twice";
  }
  ASSERT_EQ(seqs.size(), 2u + 2 * per_node);
  EXPECT_EQ(*seqs.begin(), 1u);
  EXPECT_EQ(*seqs.rbegin(), 2u + 2 * per_node) << "no gaps";
  auto log = wait_for<std::vector<shared_message>>(
      [&](auto done) { a->read_log(chat, 0, UINT64_MAX, 1000, SIZE_MAX, done); });
  ASSERT_TRUE(log);
  EXPECT_EQ(log->size(), seqs.size());
}

// A database of an older schema version that the build can upgrade is upgraded at open, and
// marked so that an older build refuses it from then on; one of another version is refused.
TEST_F(two_nodes, an_older_schema_is_upgraded_and_an_unknown_one_refused) {
  a.reset();
  b.reset();
  auto version = [&] {
    const auto v = one_value("SELECT value FROM parley_meta WHERE key = 'schema_version'");
    return v.empty() ? -1 : std::stoi(v);
  };
  auto open_node = [&] {
    postgresql_options o;
    o.conninfo = conninfo;
    o.node_id = 1;
    return std::make_unique<postgresql_store>(o);
  };
  ASSERT_EQ(version(), pg::schema_version);
  run_sql("UPDATE parley_meta SET value = " + std::to_string(pg::oldest_upgradable_version) +
          " WHERE key = 'schema_version'");
  // What versions before 3 lacked: the column is added in place.
  const auto upload_column = [&] {
    return one_value(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'media' AND column_name = 'upload_id'");
  };
  run_sql("ALTER TABLE media DROP COLUMN upload_id");
  ASSERT_EQ(upload_column(), "0");
  ASSERT_NO_THROW(a = open_node());
  EXPECT_EQ(version(), pg::schema_version);
  EXPECT_EQ(upload_column(), "1");
  EXPECT_TRUE(user(*a, "alice").user != 0) << "the upgraded store serves";
  a.reset();

  // A newer database: refused before any DDL, so that this build's functions do not replace
  // the newer build's (CREATE OR REPLACE rewrites a function's row even when the body is the
  // same: its xmin shows it).
  auto function_row = [&] {
    return one_value(
        "SELECT xmin::text FROM pg_proc WHERE proname = 'parley_send' AND pronamespace = "
        "current_schema()::regnamespace");
  };
  run_sql("UPDATE parley_meta SET value = " + std::to_string(pg::schema_version + 1) +
          " WHERE key = 'schema_version'");
  const auto before = function_row();
  EXPECT_THROW(open_node(), std::runtime_error);
  EXPECT_EQ(version(), pg::schema_version + 1) << "a refused database is left as it was";
  EXPECT_EQ(function_row(), before) << "the refusing build put its functions back";
}

TEST_F(two_nodes, never_hand_out_one_one_time_prekey_twice) {
  const auto bob = user(*a, "bob");
  key_upload keys{bob.device, "identity", 7, prekey{1, "spk", "sig"}, {}};
  constexpr std::uint32_t count = 60;
  for (std::uint32_t i = 0; i < count; ++i) keys.one_time_prekeys.push_back({100 + i, "otk", {}});
  ASSERT_TRUE(wait_for<key_stock>([&](auto done) { a->upload_keys(keys, 500, done); }));

  in_flight<std::vector<key_bundle>> takes;
  for (std::uint32_t i = 0; i < count + 10; ++i) (i % 2 ? a : b)->take_key_bundles("bob", true, takes.slot());
  ASSERT_TRUE(takes.wait_until_completed(count + 10));
  std::set<std::uint32_t> handed;
  std::size_t without = 0;
  for (const auto& r : takes.all()) {
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_EQ(r->size(), 1u);
    if (!(*r)[0].one_time_prekey) {
      ++without;
      continue;
    }
    EXPECT_TRUE(handed.insert((*r)[0].one_time_prekey->id).second)
        << "prekey " << (*r)[0].one_time_prekey->id << " handed out twice";
  }
  EXPECT_EQ(handed.size(), count);
  EXPECT_EQ(without, 10u);
}

TEST_F(two_nodes, a_name_registered_on_both_at_once_is_taken_once) {
  in_flight<registration> regs;
  sha256_digest h{};
  for (int i = 0; i < 10; ++i) {
    a->register_account({"carol", h}, regs.slot());
    b->register_account({"carol", h}, regs.slot());
  }
  ASSERT_TRUE(regs.wait_until_completed(20));
  int ok = 0;
  for (const auto& r : regs.all()) {
    if (r) {
      ++ok;
    } else {
      EXPECT_EQ(r.error(), errc::username_taken) << r.error().message();
    }
  }
  EXPECT_EQ(ok, 1);
}

TEST_F(two_nodes, ids_differ_between_nodes_and_survive_a_restart) {
  const auto alice = user(*a, "alice");
  const auto bob = user(*a, "bob");
  auto m1 = wait_for<send_outcome>([&](auto done) {
    a->send({alice.user, alice.device, "alice", {0, "bob"}, "1", "x", 1, 0, {}}, done);
  });
  auto m2 = wait_for<send_outcome>([&](auto done) {
    b->send({bob.user, bob.device, "bob", {0, "alice"}, "2", "x", 1, 0, {}}, done);
  });
  ASSERT_TRUE(m1 && m2);
  EXPECT_NE(m1->id, m2->id);
  EXPECT_EQ((m1->id >> 12) & 1023, 1u) << "node 1's Snowflake";
  EXPECT_EQ((m2->id >> 12) & 1023, 2u) << "node 2's Snowflake";

  // Node 1 again, as after a restart with its clock set back: its ids start past the mark
  // it recorded (a lease ahead of its last id), never at or below one it issued.
  a.reset();
  postgresql_options o;
  o.conninfo = conninfo;
  o.node_id = 1;
  a = std::make_unique<postgresql_store>(o);
  auto m3 = wait_for<send_outcome>([&](auto done) {
    a->send({alice.user, alice.device, "alice", {m1->chat, {}}, "3", "x", 1, 0, {}}, done);
  });
  ASSERT_TRUE(m3) << m3.error().message();
  EXPECT_GT(m3->id, m1->id);
  EXPECT_GE(snowflake::time_ms_of(m3->id), snowflake::time_ms_of(m1->id) + 10'000)
      << "past the recorded lease, not only past the wall clock";
}

// The writer pipelines a group: a request's trailing writes (here an ack's cursor upsert) are
// not waited for, and its request is answered from what came back before them. When one of
// them fails the group is applied again request by request: only that request fails, and
// every other one of its group is applied (none is lost, none answered "applied" wrongly).
TEST_F(two_nodes, a_write_that_fails_unwaited_fails_its_request_alone) {
  const auto alice = user(*a, "alice");
  const auto bob = user(*a, "bob");
  chat_id chat = 0;
  for (int i = 1; i <= 20; ++i) {
    auto sent = wait_for<send_outcome>([&](auto done) {
      a->send({alice.user, alice.device, "alice", {chat, chat ? "" : "bob"},
               "m" + std::to_string(i), "x", 1, 0, {}},
              done);
    });
    ASSERT_TRUE(sent) << sent.error().message();
    chat = sent->chat;
  }
  // The database refuses the cursor at seq 13 (a trigger: what a full disk or a constraint
  // would do to one statement).
  run_sql(
      "CREATE FUNCTION refuse_13() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
      "IF NEW.seq = 13 THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$; "
      "CREATE TRIGGER refuse_13 BEFORE INSERT OR UPDATE ON cursors FOR EACH ROW "
      "EXECUTE FUNCTION refuse_13()");
  // Twenty acks at once: the writer takes them in one or a few groups.
  in_flight<watermark_moves> acks;
  for (std::uint64_t seq = 1; seq <= 20; ++seq)
    a->ack(bob.device, bob.user, {{chat, seq}}, acks.slot());
  ASSERT_TRUE(acks.wait_until_completed(20));
  const auto results = acks.all();
  for (std::size_t i = 0; i < results.size(); ++i) {
    const std::uint64_t seq = i + 1;
    if (seq == 13) {
      EXPECT_FALSE(results[i]) << "the refused cursor's ack must not be answered applied";
    } else {
      EXPECT_TRUE(results[i]) << "ack of " << seq << ": " << results[i].error().message();
    }
  }
  // The cursor is where the last ack put it, and bob's watermark says so.
  auto status = wait_for<status_report>(
      [&](auto done) { a->status(alice.user, chat, 20, false, done); });
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_EQ(status->status, message_status::delivered);
}

// Sends are one statement each, sent without waiting and read after the group's COMMIT
// (parley_send): a refusal among them must leave the others appended, in order.
TEST_F(two_nodes, refused_sends_in_one_group_leave_the_others_appended_in_order) {
  writer_gate gate;
  auto node = gated_node(gate);
  const auto alice = user(*node, "alice");
  user(*node, "bob");
  in_flight<registration> holding;
  in_flight<send_outcome> sends;
  constexpr int n = 60;
  in_one_group(
      gate,
      [&] {
        node->register_account({"carol", {}}, holding.slot());
      },
      [&] {
        for (int i = 0; i < n; ++i) {
          // Every third names nobody, every fifth alice herself; the rest go to bob.
          const std::string to = i % 3 == 1 ? "nobody" : i % 5 == 2 ? "alice" : "bob";
          node->send(
              {alice.user, alice.device, "alice", {0, to}, "m" + std::to_string(i), "x", 1, 0, {}},
              sends.slot());
        }
      });
  ASSERT_TRUE(sends.wait_until_completed(n));
  const auto results = sends.all();
  std::uint64_t expected_seq = 1;
  chat_id chat = 0;
  for (int i = 0; i < n; ++i) {
    const auto& r = results[static_cast<std::size_t>(i)];
    if (i % 3 == 1) {
      ASSERT_FALSE(r);
      EXPECT_EQ(r.error(), errc::unknown_user) << i;
    } else if (i % 5 == 2) {
      ASSERT_FALSE(r);
      EXPECT_EQ(r.error(), errc::self_message) << i;
    } else {
      ASSERT_TRUE(r) << i << ": " << r.error().message();
      EXPECT_EQ(r->seq, expected_seq++) << i;
      if (chat == 0) chat = r->chat;
      EXPECT_EQ(r->chat, chat) << "the pair's first message made one chat";
      EXPECT_FALSE(r->duplicate);
    }
  }
  auto log = wait_for<std::vector<shared_message>>(
      [&](auto done) { node->read_log(chat, 0, UINT64_MAX, 1000, SIZE_MAX, done); });
  ASSERT_TRUE(log);
  EXPECT_EQ(log->size(), expected_seq - 1);
}

// A send whose statement the database refuses (a trigger: what a full disk or a constraint
// would do) fails alone: the group is applied again request by request.
TEST_F(two_nodes, a_send_that_fails_unwaited_fails_its_request_alone) {
  writer_gate gate;
  auto node = gated_node(gate);
  const auto alice = user(*node, "alice");
  user(*node, "bob");
  auto first = first_message(*node, alice, "alice", "bob");
  ASSERT_TRUE(first) << first.error().message();
  run_sql(
      "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
      "IF NEW.payload = '\\x626164'::bytea THEN RAISE EXCEPTION 'refused'; END IF; "
      "RETURN NEW; END $$; "
      "CREATE TRIGGER refuse_bad BEFORE INSERT ON messages FOR EACH ROW "
      "EXECUTE FUNCTION refuse_bad()");
  in_flight<registration> holding;
  in_flight<send_outcome> sends;
  in_one_group(
      gate,
      [&] {
        node->register_account({"carol", {}}, holding.slot());
      },
      [&] {
        for (int i = 1; i <= 20; ++i) {
          node->send({alice.user,
                      alice.device,
                      "alice",
                      {first->chat, {}},
                      "m" + std::to_string(i),
                      i == 7 ? "bad" : "ok",
                      1,
                      0,
                      {}},
                     sends.slot());
        }
      });
  ASSERT_TRUE(sends.wait_until_completed(20));
  const auto results = sends.all();
  std::set<std::uint64_t> seqs{first->seq};
  for (int i = 1; i <= 20; ++i) {
    const auto& r = results[static_cast<std::size_t>(i - 1)];
    if (i == 7) {
      ASSERT_FALSE(r) << "the refused message must not be answered stored";
      EXPECT_EQ(r.error(), errc::io_error);
      continue;
    }
    ASSERT_TRUE(r) << i << ": " << r.error().message();
    EXPECT_TRUE(seqs.insert(r->seq).second);
  }
  EXPECT_EQ(seqs.size(), 20u);
  EXPECT_EQ(*seqs.rbegin(), 20u) << "the refused message took no seq";
  auto log = wait_for<std::vector<shared_message>>(
      [&](auto done) { node->read_log(first->chat, 0, UINT64_MAX, 1000, SIZE_MAX, done); });
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 20u);
  for (const auto& m : *log) EXPECT_EQ(m->payload, m->seq == 1 ? "x" : "ok");
}

// An ack that fails on a statement it waited for (its user's name, read on the writer's first
// meeting with the user) has no savepoint of its own: the group is applied again request by
// request, and only that ack fails.
TEST_F(two_nodes, an_ack_whose_name_lookup_fails_fails_alone) {
  writer_gate gate;
  auto node = gated_node(gate);
  const auto alice = user(*node, "alice");
  const auto bob = user(*node, "bob");
  const auto carol = user(*node, "carol");
  const auto to_bob = first_message(*node, alice, "alice", "bob");
  const auto to_carol = first_message(*node, alice, "alice", "carol");
  ASSERT_TRUE(to_bob && to_carol);
  // carol's ack has the writer prepare its name lookup (and keep carol's name); then the
  // lookup can no longer run (what a dropped column or a timeout would do to it).
  ASSERT_TRUE(wait_for<watermark_moves>([&](auto done) {
    node->ack(carol.device, carol.user, {{to_carol->chat, 1}}, done);
  }));
  run_sql("ALTER TABLE users RENAME COLUMN username TO username_gone");
  in_flight<send_outcome> holding;
  in_flight<send_outcome> sends;
  in_flight<watermark_moves> ack;
  in_one_group(
      gate,
      [&] {
        node->send({alice.user, alice.device, "alice", {to_bob->chat, {}}, "hold", "x", 1, 0, {}},
                   holding.slot());
      },
      [&] {
        auto send = [&](int i) {
          node->send({alice.user,
                      alice.device,
                      "alice",
                      {to_bob->chat, {}},
                      "s" + std::to_string(i),
                      "x",
                      1,
                      0,
                      {}},
                     sends.slot());
        };
        for (int i = 0; i < 5; ++i) send(i);
        node->ack(bob.device, bob.user, {{to_bob->chat, 1}}, ack.slot());
        for (int i = 5; i < 10; ++i) send(i);
      });
  const auto acked = ack.all();
  ASSERT_FALSE(acked[0]) << "the ack whose lookup failed must not be answered applied";
  for (const auto& r : sends.all()) EXPECT_TRUE(r) << r.error().message();
}

// A chat id past 63 bits names no chat: not found, at once, and the group it came in goes on
// (the database would refuse the value itself, failing the group's first attempt).
TEST_F(two_nodes, a_chat_id_past_63_bits_is_not_found) {
  writer_gate gate;
  auto node = gated_node(gate);
  const auto alice = user(*node, "alice");
  user(*node, "bob");
  auto first = first_message(*node, alice, "alice", "bob");
  ASSERT_TRUE(first);
  constexpr chat_id huge = std::numeric_limits<std::uint64_t>::max();
  in_flight<registration> holding;
  in_flight<send_outcome> sends;
  in_flight<watermark_moves> marks;
  in_one_group(
      gate,
      [&] {
        node->register_account({"carol", {}}, holding.slot());
      },
      [&] {
        node->send({alice.user, alice.device, "alice", {first->chat, {}}, "a", "x", 1, 0, {}},
                   sends.slot());
        node->send({alice.user, alice.device, "alice", {huge, {}}, "b", "x", 1, 0, {}},
                   sends.slot());
        node->ack(alice.device, alice.user, {{huge, 1}}, marks.slot());
        node->mark_read(alice.user, huge, 1, marks.slot());
        node->send({alice.user, alice.device, "alice", {first->chat, {}}, "c", "x", 1, 0, {}},
                   sends.slot());
      });
  const auto sent = sends.all();
  ASSERT_TRUE(sent[0] && sent[2]);
  EXPECT_EQ(sent[0]->seq, 2u);
  EXPECT_EQ(sent[2]->seq, 3u);
  ASSERT_FALSE(sent[1]);
  EXPECT_EQ(sent[1].error(), errc::not_found);
  for (const auto& m : marks.all()) {
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error(), errc::not_found);
  }
  // And every read or change that takes an id from a client: not found, not a failed
  // statement (an Authenticate with such a device id would otherwise get INTERNAL, which is
  // not counted as a failed login).
  auto not_found = [](const auto& r) { return !r && r.error() == errc::not_found; };
  EXPECT_TRUE(not_found(wait_for<device>([&](auto done) { node->find_device(huge, done); })));
  EXPECT_TRUE(
      not_found(wait_for<group_info>([&](auto done) { node->get_group(alice.user, huge, done); })));
  EXPECT_TRUE(not_found(wait_for<history_page>([&](auto done) {
    node->history(alice.user, {huge, {}}, 0, 10, 1 << 20, done);
  })));
  EXPECT_TRUE(not_found(
      wait_for<status_report>([&](auto done) { node->status(alice.user, huge, 1, false, done); })));
  EXPECT_TRUE(not_found(
      wait_for<media_record>([&](auto done) { node->media_of(alice.user, huge, 1, done); })));
  group_change_request change;
  change.actor = alice.user;
  change.actor_device = alice.device;
  change.actor_name = "alice";
  change.chat = huge;
  change.change = group_change::leave;
  EXPECT_TRUE(
      not_found(wait_for<group_outcome>([&](auto done) { node->change_group(change, done); })));
}

// A node with several writers: one device's sends go to one writer and are applied in the
// order they came; other devices' sends to the same chat go to the others, and the chat's
// seqs are still handed out once each.
TEST_F(two_nodes, several_writers_keep_one_devices_order) {
  postgresql_options o;
  o.conninfo = conninfo;
  o.node_id = 3;
  o.writers = 3;
  postgresql_store c(o);
  const auto alice = user(c, "alice");
  std::vector<registration> others;
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) {
    names.push_back("u" + std::to_string(i));
    others.push_back(user(c, names.back()));
  }
  auto group = wait_for<group_outcome>([&](auto done) {
    c.create_group({alice.user, alice.device, "alice", "g", names, 1024, "create-g"}, done);
  });
  ASSERT_TRUE(group) << group.error().message();
  const chat_id chat = group->info.chat;

  constexpr std::size_t per_device = 40;
  in_flight<send_outcome> mine;
  in_flight<send_outcome> theirs;
  for (std::size_t i = 0; i < per_device; ++i) {
    c.send({alice.user, alice.device, "alice", {chat, {}}, "a" + std::to_string(i), "x", 4, 0, {}},
           mine.slot());
    for (const auto& u : others) {
      c.send({u.user, u.device, "u", {chat, {}}, std::to_string(u.device) + "-" + std::to_string(i),
              "y", 4, 0, {}},
             theirs.slot());
    }
  }
  ASSERT_TRUE(mine.wait_until_completed(per_device));
  ASSERT_TRUE(theirs.wait_until_completed(per_device * others.size()));
  std::set<std::uint64_t> seqs;
  std::uint64_t last = 0;
  for (const auto& r : mine.all()) {
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_GT(r->seq, last) << "alice's messages in the order she sent them";
    last = r->seq;
    EXPECT_TRUE(seqs.insert(r->seq).second);
  }
  for (const auto& r : theirs.all()) {
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_TRUE(seqs.insert(r->seq).second) << "seq " << r->seq << " handed out twice";
  }
  EXPECT_EQ(seqs.size(), per_device * (1 + others.size()));
  EXPECT_EQ(*seqs.rbegin() - *seqs.begin() + 1, seqs.size()) << "no gaps";
}

// A retry of one message through both nodes at the same moment (a client that reconnected
// elsewhere) appends it once: the second finds the first's dedupe record.
TEST_F(two_nodes, one_message_sent_through_both_at_once_is_appended_once) {
  const auto alice = user(*a, "alice");
  user(*a, "bob");
  auto first = wait_for<send_outcome>([&](auto done) {
    a->send({alice.user, alice.device, "alice", {0, "bob"}, "hello", "x", 1, 0, {}}, done);
  });
  ASSERT_TRUE(first);
  for (int round = 0; round < 10; ++round) {
    const std::string id = "retry" + std::to_string(round);
    in_flight<send_outcome> sends;
    for (int i = 0; i < 4; ++i)
      (i % 2 ? b : a)->send(
          {alice.user, alice.device, "alice", {first->chat, {}}, id, "x", 1, 0, {}}, sends.slot());
    ASSERT_TRUE(sends.wait_until_completed(4));
    std::set<std::uint64_t> seqs;
    int appended = 0;
    for (const auto& r : sends.all()) {
      ASSERT_TRUE(r) << r.error().message();
      seqs.insert(r->seq);
      appended += r->duplicate ? 0 : 1;
    }
    EXPECT_EQ(seqs.size(), 1u) << "round " << round << ": one seq for one message";
    EXPECT_EQ(appended, 1) << "round " << round;
  }
  auto log = wait_for<std::vector<shared_message>>(
      [&](auto done) { a->read_log(first->chat, 0, UINT64_MAX, 1000, SIZE_MAX, done); });
  ASSERT_TRUE(log);
  EXPECT_EQ(log->size(), 11u);
}

// A request whose statement gives up on a lock (lock_timeout: another node stalled holding it,
// or an operator's transaction) is refused BUSY, retryable, not INTERNAL: nothing of it was
// applied, and the same request passes once the lock is free.
TEST_F(two_nodes, a_request_that_times_out_on_a_lock_is_busy_and_passes_later) {
  using namespace std::chrono_literals;
  postgresql_options o;
  o.conninfo = conninfo;
  o.node_id = 3;
  o.lock_timeout = 300ms;
  auto node = std::make_unique<postgresql_store>(o);
  user(*node, "alice");
  pg::connection holder;
  std::string error;
  ASSERT_TRUE(holder.open(conninfo, error)) << error;
  ASSERT_TRUE(holder.run("BEGIN; LOCK TABLE users IN SHARE MODE")) << holder.error_message();
  auto refused = wait_for<registration>([&](auto done) {
    node->register_account({"bob", {}}, done);
  });
  ASSERT_FALSE(refused) << "registered while the table was locked";
  EXPECT_EQ(refused.error(), errc::busy) << refused.error().message();
  ASSERT_TRUE(holder.run("COMMIT")) << holder.error_message();
  auto again = wait_for<registration>([&](auto done) {
    node->register_account({"bob", {}}, done);
  });
  EXPECT_TRUE(again) << again.error().message();
}

// A node that starts on a database of its own schema version runs no DDL: it neither waits
// for the write transactions under way on other nodes nor queues their writes behind its own
// locks. (CREATE INDEX IF NOT EXISTS takes a SHARE lock on its table even when the index is
// there: with the schema run at every start, this start waited for the holder below until
// its lock_timeout and failed.)
TEST_F(two_nodes, a_node_starts_while_another_holds_a_write_transaction_open) {
  using namespace std::chrono_literals;
  pg::connection holder;
  std::string error;
  ASSERT_TRUE(holder.open(conninfo, error)) << error;
  // What a group commit holds on the tables it writes, for as long as it runs.
  ASSERT_TRUE(
      holder.run("BEGIN; LOCK TABLE chats, chat_members, messages, cursors, media IN "
                 "ROW EXCLUSIVE MODE"))
      << holder.error_message();
  postgresql_options o;
  o.conninfo = conninfo;
  o.node_id = 3;
  o.lock_timeout = 500ms;
  std::unique_ptr<postgresql_store> node;
  ASSERT_NO_THROW(node = std::make_unique<postgresql_store>(o));
  user(*node, "alice");  // it serves (users is not held)
  ASSERT_TRUE(holder.run("COMMIT")) << holder.error_message();
}

// A database process that freezes while its host's TCP still acknowledges everything (SIGSTOP
// of the node's own backends: a hung disk, a stopped container) is given up after the answer
// timeout: the writer and the readers open new connections and the node goes on. Without the
// timeout, the writer waits on the frozen backend for good (its idle check first).
TEST_F(two_nodes, a_frozen_database_process_is_given_up_and_the_node_goes_on) {
  using namespace std::chrono_literals;
  const std::string app = "parley_frozen_" + std::to_string(std::random_device{}());
  postgresql_options o;
  o.conninfo = conninfo + " application_name=" + app;
  o.node_id = 3;
  o.answer_timeout = 1s;
  o.reconnect_interval = 100ms;
  auto node = std::make_unique<postgresql_store>(o);
  user(*node, "alice");
  ASSERT_TRUE(wait_for<account>([&](auto done) { node->find_account("alice", done); }));

  std::vector<pid_t> pids;
  {
    pg::connection db;
    std::string error;
    ASSERT_TRUE(db.open(conninfo, error)) << error;
    auto r = db.exec("SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                     pg::params().text(app));
    ASSERT_TRUE(r) << db.error_message();
    for (int i = 0; i < r->size(); ++i) pids.push_back(static_cast<pid_t>(r->u64(i, 0)));
  }
  ASSERT_GE(pids.size(), 2u) << "the node's writer and a reader";
  struct thaw_at_exit {  // whatever the test's outcome
    std::vector<pid_t> pids;
    ~thaw_at_exit() {
      for (auto p : pids) ::kill(p, SIGCONT);
    }
  } thaw{pids};
  for (auto p : pids) ASSERT_EQ(::kill(p, SIGSTOP), 0) << "pid " << p;

  // A call that completes within `limit`, tried again while it fails (the request in flight
  // on the frozen connection when it is given up may be refused, STORAGE_UNAVAILABLE).
  const auto start = std::chrono::steady_clock::now();
  auto until_ok = [&](const char* what, auto call) {
    const auto deadline = start + 10s;
    for (;;) {
      auto p = std::make_shared<std::promise<bool>>();
      auto f = p->get_future();
      call([p](auto r) { p->set_value(static_cast<bool>(r)); });
      if (f.wait_until(deadline) != std::future_status::ready) {
        ADD_FAILURE() << what << ": no answer within 10 s of the freeze";
        return;
      }
      if (f.get()) return;
      std::this_thread::sleep_for(100ms);
    }
  };
  until_ok("a write", [&](auto done) {
    node->register_account({"bob", {}}, [done](result<registration> r) { done(r); });
  });
  until_ok("a read",
           [&](auto done) { node->find_account("alice", [done](result<account> r) { done(r); }); });
  EXPECT_TRUE(node->health().writable);
}

}  // namespace
}  // namespace parley::store
