// The Redis client: slots and URLs as Redis defines them, and the client against a real
// redis-server the test starts (commands, pipelined bursts, pub/sub, a server restart).
#include "redis/redis_client.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "redis_server.hpp"

namespace parley::redis {
namespace {

using namespace std::chrono_literals;

TEST(redis_slots, key_slot_matches_redis_cluster) {
  // Redis Cluster specification: CRC16-XMODEM("123456789") = 0x31C3; CLUSTER KEYSLOT foo is
  // 12182 (redis-cli on a cluster node answers the same).
  EXPECT_EQ(key_slot("123456789"), 0x31C3 % 16384);
  EXPECT_EQ(key_slot("foo"), 12182);
  // A {hash tag}: only what is between the first { and the next } counts.
  EXPECT_EQ(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
  EXPECT_EQ(key_slot("{user1000}.following"), key_slot("user1000"));
  EXPECT_NE(key_slot("foo{}{bar}"), key_slot("bar"));  // an empty tag: the whole key
  EXPECT_EQ(key_slot("foo{{bar}}zap"), key_slot("{bar"));
  EXPECT_EQ(key_slot("foo{bar}{zap}"), key_slot("bar"));
}

TEST(redis_slots, key_slot_agrees_with_a_real_server) {
  test_support::redis_server server({"--cluster-enabled", "yes"});
  for (const std::string key : {"parley:conn:{d1}", "parley:conn:{d2}", "parley:node:{3}", "a"}) {
    EXPECT_EQ(server.cli({"CLUSTER", "KEYSLOT", key}), std::to_string(key_slot(key))) << key;
  }
}

TEST(redis_url, parse) {
  auto u = parse_url("redis://127.0.0.1:6380");
  EXPECT_EQ(u.seed.host, "127.0.0.1");
  EXPECT_EQ(u.seed.port, 6380);
  EXPECT_FALSE(u.cluster);
  u = parse_url("redis://cache.internal?cluster=1");
  EXPECT_EQ(u.seed.host, "cache.internal");
  EXPECT_EQ(u.seed.port, 6379);
  EXPECT_TRUE(u.cluster);
  EXPECT_THROW(parse_url("http://x"), std::invalid_argument);
  EXPECT_THROW(parse_url("redis://"), std::invalid_argument);
  EXPECT_THROW(parse_url("redis://h:0"), std::invalid_argument);
  EXPECT_THROW(parse_url("redis://h:x"), std::invalid_argument);
  EXPECT_THROW(parse_url("redis://h:1?tls=1"), std::invalid_argument);

  // Credentials: [USER]:PASSWORD@, percent-decoded; never repeated in an error.
  u = parse_url("redis://:s%40cret%3A1@10.0.0.5:6380?cluster=1");
  EXPECT_EQ(u.auth.username, "");
  EXPECT_EQ(u.auth.password, "s@cret:1");
  EXPECT_EQ(u.seed.host, "10.0.0.5");
  EXPECT_EQ(u.seed.port, 6380);
  EXPECT_TRUE(u.cluster);
  u = parse_url("redis://parley:pw@cache");
  EXPECT_EQ(u.auth.username, "parley");
  EXPECT_EQ(u.auth.password, "pw");
  EXPECT_EQ(u.seed.host, "cache");
  // A cluster's other nodes after the seed, to learn the slot map from while it is down.
  u = parse_url("redis://:pw@10.0.0.5:7000,10.0.0.6,10.0.0.7:7002?cluster=1");
  EXPECT_EQ(u.seed.text(), "10.0.0.5:7000");
  ASSERT_EQ(u.more_seeds.size(), 2u);
  EXPECT_EQ(u.more_seeds[0].text(), "10.0.0.6:6379");
  EXPECT_EQ(u.more_seeds[1].text(), "10.0.0.7:7002");
  EXPECT_EQ(u.auth.password, "pw");
  EXPECT_TRUE(parse_url("redis://h:1").more_seeds.empty());
  EXPECT_THROW(parse_url("redis://h:1,g:2"), std::invalid_argument);  // one Redis, one address
  EXPECT_THROW(parse_url("redis://h:1,?cluster=1"), std::invalid_argument);
  EXPECT_THROW(parse_url("redis://h:1,g:0?cluster=1"), std::invalid_argument);
  for (const char* bad : {"redis://justapassword@h", "redis://user:@h", "redis://:%zz@h",
                          "redis://:topsecret@h:99999", "redis://:topsecret@h/x"}) {
    try {
      parse_url(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()).find("topsecret"), std::string::npos) << e.what();
    }
  }
}

// Waits for `n` values pushed from other threads.
template <class T>
struct inbox {
  std::mutex m;
  std::condition_variable cv;
  std::vector<T> items;
  void push(T v) {
    std::lock_guard lock(m);
    items.push_back(std::move(v));
    cv.notify_all();
  }
  bool wait(std::size_t n, std::chrono::milliseconds t = 10s) {
    std::unique_lock lock(m);
    return cv.wait_for(lock, t, [&] { return items.size() >= n; });
  }
  bool has(const T& v) {
    std::lock_guard lock(m);
    return std::find(items.begin(), items.end(), v) != items.end();
  }
};

std::optional<reply> call(client& c, std::string key, std::vector<std::string> args) {
  std::promise<std::optional<reply>> p;
  auto f = p.get_future();
  c.command(key, std::move(args), [&p](std::optional<reply> r) { p.set_value(std::move(r)); });
  if (f.wait_for(10s) != std::future_status::ready) return std::nullopt;
  return f.get();
}

// A command succeeds once the client is connected (it connects in the background).
std::optional<reply> call_when_up(client& c, std::string key, std::vector<std::string> args) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = call(c, key, args);
    if (r) return r;
    std::this_thread::sleep_for(50ms);
  }
  return std::nullopt;
}

// Publishes `what` on `channel` until the subscription hears it (it may take a moment to be in
// place), for at most 10 s.
bool heard(client& c, inbox<std::string>& got, const std::string& channel,
           const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!got.has(what) && std::chrono::steady_clock::now() < deadline) {
    c.publish(channel, what);
    got.wait(1'000'000, 100ms);
  }
  return got.has(what);
}

// What a client hears: the messages on "chan", each time its subscription is made, and its
// up/down states. Made on `c` before it starts.
struct watched {
  explicit watched(client& c) {
    c.subscribe(
        "chan", [this](std::string_view p) { got.push(std::string(p)); },
        [this] { subscribed.push(1); });
    c.on_state([this](bool up) { states.push(up); });
  }
  // Whether `c` says it is down within 5 s (the pending handlers run before hiredis reports
  // the disconnection).
  static bool down(client& c) {
    const auto by = std::chrono::steady_clock::now() + 5s;
    while (c.connected() && std::chrono::steady_clock::now() < by)
      std::this_thread::sleep_for(10ms);
    return !c.connected();
  }
  // Up, down, up: each change once, in that order.
  void expect_up_down_up() {
    ASSERT_TRUE(states.wait(3));
    EXPECT_EQ(states.items[0], true);
    EXPECT_EQ(states.items[1], false);
    EXPECT_EQ(states.items[2], true);
  }

  inbox<std::string> got;
  inbox<int> subscribed;
  inbox<bool> states;
};

TEST(redis_client, commands_pipelined_bursts_and_pub_sub) {
  test_support::redis_server server;
  client c({{"127.0.0.1", server.port()}, false, 100ms});
  inbox<std::string> got;
  c.subscribe("chan", [&](std::string_view p) { got.push(std::string(p)); });
  c.start();

  auto set = call_when_up(c, "k", {"SET", "k", std::string("v\0x", 3)});
  ASSERT_TRUE(set);
  EXPECT_EQ(set->str, "OK");
  auto get = call(c, "k", {"GET", "k"});
  ASSERT_TRUE(get);
  EXPECT_EQ(get->str, std::string("v\0x", 3)) << "binary-safe arguments and replies";
  auto missing = call(c, "nope", {"GET", "nope"});
  ASSERT_TRUE(missing);
  EXPECT_TRUE(missing->is_nil());
  auto error = call(c, "k", {"INCR", "k"});
  ASSERT_TRUE(error);
  EXPECT_TRUE(error->is_error());

  // 1,000 commands issued at once all come back, in order.
  inbox<long long> counts;
  for (int i = 0; i < 1000; ++i)
    c.command("n", {"INCR", "n"}, [&](std::optional<reply> r) { counts.push(r ? r->integer : -1); });
  ASSERT_TRUE(counts.wait(1000));
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(counts.items[i], i + 1);

  // Pub/sub.
  EXPECT_TRUE(heard(c, got, "chan", "hello"));
  c.stop();
}

// A Redis with a password: commands and the subscription work with it; with a wrong one the
// client never counts as connected and its commands fail, and nothing it sent was applied.
TEST(redis_client, authenticates_with_a_password_and_is_refused_without_the_right_one) {
  test_support::redis_server server({"--requirepass", "s3cret"});
  client_options good{{"127.0.0.1", server.port()}, false, 100ms};
  good.auth.password = "s3cret";
  client c(good);
  inbox<std::string> got;
  c.subscribe("chan", [&](std::string_view p) { got.push(std::string(p)); });
  c.start();
  auto set = call_when_up(c, "k", {"SET", "k", "v"});
  ASSERT_TRUE(set);
  EXPECT_EQ(set->str, "OK");
  EXPECT_TRUE(c.connected());
  EXPECT_TRUE(heard(c, got, "chan", "hello"));
  c.stop();

  client_options wrong = good;
  wrong.auth.password = "guess";
  client w(wrong);
  w.start();
  std::this_thread::sleep_for(500ms);  // several connection attempts (100 ms apart)
  EXPECT_FALSE(w.connected());
  auto refused = call(w, "k", {"SET", "k", "mine"});
  EXPECT_TRUE(!refused || refused->is_error());
  w.stop();
  EXPECT_EQ(server.cli({"GET", "k"}), "v");
}

TEST(redis_client, a_restarted_server_is_found_again_and_the_subscription_comes_back) {
  test_support::redis_server server;
  client c({{"127.0.0.1", server.port()}, false, 100ms});
  watched w(c);
  c.start();
  ASSERT_TRUE(call_when_up(c, "k", {"PING"}));
  // Subscribed before the server goes (else the subscription after the restart is the first,
  // not a resubscription): publish until it is heard.
  ASSERT_TRUE(heard(c, w.got, "chan", "before"));

  server.kill9();
  // While it is down, commands fail at once (nullopt), never hang.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(call(c, "k", {"PING"}));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_TRUE(watched::down(c));

  server.start();
  ASSERT_TRUE(call_when_up(c, "k", {"PING"}));
  // Once at the start, once after the restart.
  EXPECT_TRUE(w.subscribed.wait(2)) << "the subscription was not made again";
  EXPECT_TRUE(heard(c, w.got, "chan", "after"));
  w.expect_up_down_up();
  c.stop();
}

// A Redis that stops answering without closing anything (SIGSTOP: the kernel still accepts
// connections and acknowledges what is sent) is given up within the client's timeout,
// commands and subscription alike, and taken back once it answers again. Without the
// timeout a command waits for as long as TCP keeps the connection (many minutes when a host
// is gone without a reset), and the subscription never notices.
TEST(redis_client, a_redis_that_stops_answering_is_given_up_within_the_timeout) {
  test_support::redis_server server;
  client_options o{{"127.0.0.1", server.port()}, false, 100ms};
  o.timeout = 400ms;
  client c(o);
  watched w(c);
  c.start();
  ASSERT_TRUE(call_when_up(c, "k", {"PING"}));
  ASSERT_TRUE(heard(c, w.got, "chan", "before"));

  const auto stopped = server.pause();
  ASSERT_TRUE(stopped);
  for (int i = 0; i < 2; ++i) {  // the first on the open connection, then on a new one
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(call(c, "k", {"PING"}));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s) << "command " << i << " hung";
  }
  EXPECT_TRUE(watched::down(c));

  ASSERT_TRUE(stopped->resume());
  ASSERT_TRUE(call_when_up(c, "k", {"PING"}));
  EXPECT_TRUE(w.subscribed.wait(2)) << "the silent subscription was not made again";
  EXPECT_TRUE(heard(c, w.got, "chan", "after"));
  w.expect_up_down_up();  // never up while Redis did not answer
  c.stop();
}

TEST(redis_client, a_cluster_routes_by_slot_and_follows_moved) {
  test_support::redis_cluster cluster;
  client c({{"127.0.0.1", cluster.node(0).port()}, true, 100ms});
  inbox<std::string> got;
  c.subscribe("parley:node:{7}", [&](std::string_view p) { got.push(std::string(p)); });
  c.start();
  ASSERT_TRUE(call_when_up(c, "x", {"PING"}));
  // Keys on every master: each lands where Redis says its slot lives, read back through the
  // client (a wrong node would answer MOVED, which the client follows).
  for (int i = 0; i < 60; ++i) {
    const std::string key = "parley:conn:{d" + std::to_string(i) + "}";
    auto r = call(c, key, {"SET", key, std::to_string(i)});
    ASSERT_TRUE(r) << key;
    ASSERT_FALSE(r->is_error()) << key << ": " << r->str;
  }
  int masters_with_keys = 0;
  for (std::size_t n = 0; n < 3; ++n) masters_with_keys += cluster.node(n).cli({"DBSIZE"}) != "0";
  EXPECT_EQ(masters_with_keys, 3);
  for (int i = 0; i < 60; ++i) {
    const std::string key = "parley:conn:{d" + std::to_string(i) + "}";
    auto r = call(c, key, {"GET", key});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->str, std::to_string(i));
  }
  // Sharded pub/sub on the channel's master.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!got.has("sharded") && std::chrono::steady_clock::now() < deadline) {
    c.publish("parley:node:{7}", "sharded");
    got.wait(1'000'000, 100ms);
  }
  EXPECT_TRUE(got.has("sharded"));
  c.stop();
}

// A cluster whose seed is down when the client starts: the slot map comes from another node
// the URL names (url::more_seeds), and commands and sharded subscriptions work on every master.
TEST(redis_client, a_cluster_is_reached_through_another_node_while_the_seed_is_down) {
  test_support::redis_cluster cluster;
  // Where nothing listens: a port the kernel handed out and took back.
  client_options o{{"127.0.0.1", test_support::free_port()}, true, 100ms};
  o.more_seeds = {{"127.0.0.1", cluster.node(1).port()}};
  client c(o);
  inbox<std::string> got;
  c.subscribe("parley:node:{7}", [&](std::string_view p) { got.push(std::string(p)); });
  c.start();
  for (int i = 0; i < 30; ++i) {
    const std::string key = "parley:conn:{d" + std::to_string(i) + "}";
    auto r = call_when_up(c, key, {"SET", key, std::to_string(i)});
    ASSERT_TRUE(r) << key << ": no answer";
    ASSERT_FALSE(r->is_error()) << key << ": " << r->str;
  }
  int masters_with_keys = 0;
  for (std::size_t n = 0; n < 3; ++n) masters_with_keys += cluster.node(n).cli({"DBSIZE"}) != "0";
  EXPECT_EQ(masters_with_keys, 3);
  EXPECT_TRUE(heard(c, got, "parley:node:{7}", "through another node"));
  c.stop();
}

// A master that fails is taken over by its replica, and nothing answers MOVED for the client
// to follow: the client reads the slot map again when it loses a node (or a command finds
// none) and goes on with the new master, commands and sharded subscription alike; with its
// seed gone too, it reads the map from the nodes it knows.
TEST(redis_client, a_cluster_master_that_fails_over_is_followed_the_seed_included) {
  test_support::redis_cluster cluster(1);
  const std::size_t seed = cluster.master_of("seed");
  ASSERT_LT(seed, cluster.size());
  // A channel (and a key of its slot) on another master than the seed's.
  std::string tag;
  for (int k = 0; k < 100 && tag.empty(); ++k) {
    const std::size_t m = cluster.master_of("{" + std::to_string(k) + "}");
    if (m < cluster.size() && m != seed) tag = std::to_string(k);
  }
  ASSERT_FALSE(tag.empty());
  const std::string channel = "parley:node:{" + tag + "}";
  const std::string key = "{" + tag + "}.k";
  const std::size_t victim = cluster.master_of(channel);

  client_options o{{"127.0.0.1", cluster.node(seed).port()}, true, 100ms};
  o.timeout = 1000ms;
  client c(o);
  inbox<std::string> got;
  c.subscribe(channel, [&](std::string_view p) { got.push(std::string(p)); });
  c.start();
  ASSERT_TRUE(call_when_up(c, key, {"PING"}));
  ASSERT_TRUE(heard(c, got, channel, "before"));

  // A command succeeds (no error reply) within 30 s.
  auto works = [&](const std::string& k, const std::string& value) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
      const auto r = call(c, k, {"SET", k, value});
      if (r && !r->is_error()) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  };

  cluster.node(victim).kill9();
  ASSERT_TRUE(cluster.wait_for_master(channel, seed)) << "no replica took over";
  EXPECT_TRUE(works(key, "after")) << "commands to the failed master's slots never came back";
  EXPECT_EQ(cluster.node(cluster.master_of(key, seed)).cli({"GET", key}), "after");
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!got.has("after") && std::chrono::steady_clock::now() < deadline) {
    c.publish(channel, "after");
    got.wait(1'000'000, 200ms);
  }
  EXPECT_TRUE(got.has("after")) << "the subscription never found the new master";

  // The seed goes too: the client keeps the map and its other nodes.
  const std::string seed_key = "seed";
  std::size_t asked = cluster.master_of(channel, seed);
  cluster.node(seed).kill9();
  ASSERT_TRUE(cluster.wait_for_master(seed_key, asked)) << "no replica took over the seed";
  EXPECT_TRUE(works(seed_key, "v")) << "commands to the seed's slots never came back";
  EXPECT_TRUE(works(key, "again"));
  EXPECT_TRUE(c.connected());
  c.stop();
}

}  // namespace
}  // namespace parley::redis
