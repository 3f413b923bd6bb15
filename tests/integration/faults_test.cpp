// Faults and abuse against a real parleyd: a full disk, descriptor and connection floods,
// memory pinned by hostile sockets, rate limits, malformed HTTP. Each test fails without the
// limit or recovery it checks; each says what the server must still do for everybody else.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include "test_client.hpp"
#include "ws_client_frame.hpp"

namespace parley::test {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A blocking TCP socket to the server, for hand-made bytes.
class raw_socket {
 public:
  // To 127.0.0.1:port, from `source` (an IPv4 address of this machine: 127.0.0.2, say) if
  // given.
  explicit raw_socket(unsigned short port, const char* source = nullptr) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (source && fd_ >= 0) {
      sockaddr_in from{};
      from.sin_family = AF_INET;
      if (::inet_pton(AF_INET, source, &from.sin_addr) != 1 ||
          ::bind(fd_, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) {
        return;  // not ok()
      }
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    timeval t{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
  }
  ~raw_socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  raw_socket(const raw_socket&) = delete;
  raw_socket& operator=(const raw_socket&) = delete;

  bool ok() const { return ok_; }
  bool write(const std::string& bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  // Reads what arrives within the receive timeout, until the server closes (or `until` shows).
  std::string read(const std::string& until = {}) {
    std::string out;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
      if (!until.empty() && out.find(until) != std::string::npos) break;
    }
    return out;
  }
  // The WebSocket opening handshake; true on 101.
  bool upgrade() {
    write(
        "GET /v2/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    return read("\r\n\r\n").rfind("HTTP/1.1 101", 0) == 0;
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  bool ok_ = false;
};

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds within = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

// A free port on 127.0.0.1 (the kernel's choice, released just before use).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return 0;
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

constexpr const char* no_rate_limits =
    "[rate_limits]\nregister_per_address = 0\nregister_global = 0\nsend_per_device = 0\n";

// --- storage ------------------------------------------------------------------------------------

// A tmpfs of its own, so that filling it affects nothing else. Needs root (CI runs as root).
class small_volume {
 public:
  explicit small_volume(std::size_t bytes) {
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("parley_vol_" + std::to_string(rd()));
    fs::create_directories(dir_);
    const std::string opts = "size=" + std::to_string(bytes) + ",mode=0700";
    mounted_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, opts.c_str()) == 0;
  }
  ~small_volume() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  bool mounted() const { return mounted_; }
  const fs::path& path() const { return dir_; }
  std::uint64_t free_bytes() const {
    struct statvfs s {};
    ::statvfs(dir_.c_str(), &s);
    return static_cast<std::uint64_t>(s.f_bavail) * s.f_frsize;
  }
  // Writes a file that leaves about `leave` bytes free.
  void fill_leaving(const fs::path& file, std::uint64_t leave) {
    const std::uint64_t free_now = free_bytes();
    std::ofstream out(file, std::ios::binary);
    const std::string chunk(1 << 20, 'f');
    for (std::uint64_t written = 0; written + leave + chunk.size() <= free_now;
         written += chunk.size()) {
      out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    }
  }
  // Keeps about `leave` bytes free until the volume has stayed that full for a second, in
  // files named `prefix`0, `prefix`1…: RocksDB gives space back at any time (a compaction that
  // ends deletes its inputs, a flush deletes an old log), and a one-off fill can be undone by
  // that a moment later. Returns how many files it wrote.
  int hold_full(const std::string& prefix, std::uint64_t leave) {
    int files = 0;
    auto full_since = std::chrono::steady_clock::now();
    const auto deadline = full_since + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      if (free_bytes() > leave + (1u << 20)) {
        fill_leaving(dir_ / (prefix + std::to_string(files++)), leave);
        full_since = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - full_since >= std::chrono::seconds(1)) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return files;
  }
  void remove_held(const std::string& prefix, int files) {
    for (int i = 0; i < files; ++i) fs::remove(dir_ / (prefix + std::to_string(i)));
  }

 private:
  fs::path dir_;
  bool mounted_ = false;
};

TEST(faults, a_full_disk_refuses_writes_keeps_serving_and_recovers_by_itself) {
  small_volume volume(48u << 20);
  ASSERT_TRUE(volume.mounted()) << "mounting a tmpfs needs root: " << std::strerror(errno);
  const fs::path data = volume.path() / "data";
  boost::asio::io_context io;
  // 8 MiB reserve: the store's log is capped at 2 MiB.
  server_process server({"--data", data.string()},
                        std::string(no_rate_limits) + "[storage]\nreserve_bytes = 8388608\n");
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  bob.disconnect();

  // Leave 14 MiB free: 6 MiB above the reserve, then send until the server refuses.
  const fs::path filler = volume.path() / "filler";
  volume.fill_leaving(filler, 14u << 20);
  // Random bytes, like ciphertext: the store's compression cannot shrink them.
  std::string payload(60 * 1024, '\0');
  std::mt19937 rng(7);
  for (auto& ch : payload) ch = static_cast<char>(rng());
  int acked = 0;
  bool refused = false;
  for (int i = 0; i < 600 && !refused; ++i) {
    auto r = alice.run(alice.api().send("bob", "full-" + std::to_string(i), payload));
    if (r) {
      ++acked;
      continue;
    }
    ASSERT_EQ(r.error().code, v2::ERROR_CODE_STORAGE_UNAVAILABLE) << client::describe(r.error());
    EXPECT_GT(r.error().retry_after_ms, 0u);
    refused = true;
  }
  ASSERT_TRUE(refused) << "the server never refused a write; " << acked << " acked, "
                       << volume.free_bytes() << " bytes free";
  EXPECT_GT(acked, 10);
  EXPECT_GE(volume.free_bytes(), 4u << 20) << "the reserve was eaten into";
  // RocksDB gives space back as it goes (a flush deletes an old log, up to the 2 MiB log cap
  // and its preallocation; a compaction deletes its inputs when it ends): keep the disk 5 MiB
  // below the reserve until that has settled, so that what follows runs on a full disk.
  const int held = volume.hold_full("filler2_", 3u << 20);

  // Still serving: health says why, reads work, a second refusal is typed too. (The store
  // checks space at most every 100 ms while it has enough, and every idle second: if RocksDB
  // gave space back in between, health shows the topped-up disk within a second.)
  EXPECT_TRUE(eventually([&] {
    return http_get(server.port(), "/healthz").find("store: disk full") != std::string::npos;
  })) << http_exchange(server.port(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(http_exchange(server.port(),
                          "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: "
                          "close\r\n\r\n")
                .rfind("HTTP/1.1 503", 0),
            0u);
  auto again = alice.run(alice.api().send("bob", "full-again", "x"));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, v2::ERROR_CODE_STORAGE_UNAVAILABLE);
  auto history = alice.run(alice.api().history("bob", 0, 5));
  ASSERT_TRUE(history) << client::describe(history.error());
  EXPECT_EQ(history->messages_size(), 5);

  // A restart on the full disk: it starts and recovers what was acked. (Recovery may give back
  // the log's preallocated space: the disk is filled to below the reserve again.)
  volume.remove_held("filler2_", held);  // the test's, not the server's: the reserve is back
  server.kill9();
  server.restart();
  const int held_again = volume.hold_full("filler3_", 3u << 20);
  EXPECT_TRUE(eventually([&] {
    return http_get(server.port(), "/healthz").find("store: disk full") != std::string::npos;
  })) << "health is checked while nobody writes";
  test_client bob2(io, server.url());
  bob2.device_id = bob.device_id;
  bob2.token = bob.token;
  bob2.reconnect();  // authentication is a read: it works
  // Pushes of what is stored: every acked message, in the chat's order.
  const auto pushed = test_client::envelopes_in(bob2.drain(60s));
  EXPECT_EQ(static_cast<int>(pushed.size()), acked);
  for (std::size_t i = 0; i < pushed.size(); ++i) EXPECT_EQ(pushed[i].seq(), i + 1);
  bob2.disconnect();

  // Space returns: writes resume by themselves (the client retries after retry_after_ms).
  fs::remove(filler);
  volume.remove_held("filler3_", held_again);
  test_client alice2(io, server.url());
  alice2.device_id = alice.device_id;
  alice2.token = alice.token;
  alice2.reconnect();
  bool resumed = false;
  for (int i = 0; i < 50 && !resumed; ++i) {
    auto r = alice2.run(alice2.api().send("bob", "after-space", "back"));
    if (r) {
      resumed = true;
      break;
    }
    ASSERT_EQ(r.error().code, v2::ERROR_CODE_STORAGE_UNAVAILABLE);
    std::this_thread::sleep_for(std::chrono::milliseconds(r.error().retry_after_ms));
  }
  EXPECT_TRUE(resumed);
  EXPECT_EQ(http_get(server.port(), "/healthz"), "ok\n");
  EXPECT_EQ(server.terminate(), 0);
}

TEST(faults, the_data_directory_is_private) {
  boost::asio::io_context io;
  server_process server;
  test_client alice(io, server.url());
  alice.register_and_login("alice");
  const fs::path data = server.data_dir() / "data";
  struct stat st {};
  ASSERT_EQ(::stat(data.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(data)) {
    ASSERT_EQ(::stat(e.path().c_str(), &st), 0);
    if (S_ISDIR(st.st_mode)) {
      EXPECT_EQ(st.st_mode & 0777, 0700u) << e.path();
    } else {
      EXPECT_EQ(st.st_mode & 0777, 0600u) << e.path();
      ++files;
    }
  }
  EXPECT_GT(files, 3);
}

// --- descriptors and connections ---------------------------------------------------------------

TEST(faults, idle_sockets_cannot_take_the_descriptors_the_store_needs) {
  // 256 descriptors, 96 reserved: at most 160 connections. 300 idle sockets try to take them
  // all; the store must still open its next log file (a 1 MiB log cap makes it switch often).
  boost::asio::io_context io;
  const int metrics_port = free_port();
  // Scrapes have connections of their own: /metrics answers while the main address is full.
  server_process server({"--metrics-listen", "127.0.0.1:" + std::to_string(metrics_port)},
                        std::string(no_rate_limits) +
                            "[storage]\nreserve_bytes = 4194304\n[connections]\nreserved_fds = "
                            "96\nmax_unauthenticated = 200\n",
                        {}, {"/usr/bin/prlimit", "--nofile=256:256"});
  const auto m = static_cast<unsigned short>(metrics_port);
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");

  std::vector<std::unique_ptr<raw_socket>> flood;
  for (int i = 0; i < 300; ++i) flood.push_back(std::make_unique<raw_socket>(server.port()));
  // Those over the limit were answered 503 and closed, at once.
  EXPECT_TRUE(
      eventually([&] { return metric(m, "parley_connections_refused_total") >= 300 - 160 + 2; }));
  int refused = 0;
  for (auto& s : flood) {
    char buf[64] = {};
    const auto n = ::recv(s->fd(), buf, sizeof buf - 1, MSG_DONTWAIT);
    if (n > 0 && std::string(buf).rfind("HTTP/1.1 503", 0) == 0) ++refused;
  }
  EXPECT_GE(refused, 300 - 160 + 2);

  // 4 MiB of messages at the limit: the log switches files several times, and every write lands.
  const std::string payload(32 * 1024, 'd');
  for (int i = 0; i < 128; ++i) {
    auto r = alice.run(alice.api().send("bob", "fd-" + std::to_string(i), payload));
    ASSERT_TRUE(r) << i << ": " << client::describe(r.error());
  }
  EXPECT_EQ(http_get(m, "/healthz"), "ok\n");
  flood.clear();
  EXPECT_TRUE(eventually([&] { return http_get(server.port(), "/healthz") == "ok\n"; }));
}

TEST(faults, unauthenticated_connections_have_a_smaller_limit) {
  boost::asio::io_context io;
  server_process server({}, std::string(no_rate_limits) +
                                "[connections]\nmax_connections = 24\nmax_unauthenticated = 5\n");
  std::vector<std::unique_ptr<raw_socket>> idle;
  for (int i = 0; i < 5; ++i) {
    idle.push_back(std::make_unique<raw_socket>(server.port()));
    ASSERT_TRUE(idle.back()->ok());
  }
  raw_socket sixth(server.port());
  EXPECT_EQ(sixth.read().rfind("HTTP/1.1 503", 0), 0u);

  // Authenticated connections do not count against it: free the slots, log 20 users in.
  idle.clear();
  std::vector<std::unique_ptr<test_client>> users;
  for (int i = 0; i < 20; ++i) {
    users.push_back(std::make_unique<test_client>(io, server.url()));
    // The previous ones may still be closing on the server: retry the connect.
    ASSERT_TRUE(eventually([&] {
      auto r = users.back()->run(users.back()->api().connect(server.url()));
      return static_cast<bool>(r);
    }));
    auto r = users.back()->run(users.back()->api().register_account("user" + std::to_string(i)));
    ASSERT_TRUE(r) << client::describe(r.error());
    users.back()->device_id = r->device_id();
    users.back()->token = r->token();
    users.back()->login_on_this_connection();
  }
  raw_socket one_more(server.port());
  EXPECT_TRUE(one_more.upgrade());  // 20 authenticated + 1 new: within both limits

  // max_connections counts them all: 3 more unauthenticated make 24 (4 of them
  // unauthenticated, under 5), and the 25th is refused for the total alone.
  for (int i = 0; i < 3; ++i) {
    idle.push_back(std::make_unique<raw_socket>(server.port()));
    ASSERT_TRUE(idle.back()->ok());
  }
  raw_socket over(server.port());
  EXPECT_EQ(over.read().rfind("HTTP/1.1 503", 0), 0u) << "the 25th connection of 24";
}

// One source address cannot take every unauthenticated slot: past
// max_unauthenticated_per_address its connections are refused while another address still
// gets in, and an authenticated connection no longer counts against its address. (Loopback
// addresses are exempt by default; this server exempts none.)
TEST(faults, one_address_cannot_take_every_unauthenticated_slot) {
  boost::asio::io_context io;
  server_process server({}, std::string(no_rate_limits) +
                                "[connections]\nmax_unauthenticated = 50\n"
                                "max_unauthenticated_per_address = 3\nunlimited_addresses = []\n");
  std::vector<std::unique_ptr<raw_socket>> idle;
  for (int i = 0; i < 3; ++i) {
    idle.push_back(std::make_unique<raw_socket>(server.port()));
    ASSERT_TRUE(idle.back()->ok());
  }
  raw_socket fourth(server.port());
  EXPECT_EQ(fourth.read().rfind("HTTP/1.1 503", 0), 0u) << "the fourth from 127.0.0.1";
  raw_socket other(server.port(), "127.0.0.2");
  ASSERT_TRUE(other.ok()) << "cannot connect from 127.0.0.2";
  EXPECT_TRUE(other.upgrade()) << "another address gets in";

  // One slot freed (the server sees the close): a user logs in from 127.0.0.1, and its
  // connection, once authenticated, leaves the slot to the next unauthenticated one.
  idle.pop_back();
  test_client alice(io, server.url());
  ASSERT_TRUE(
      eventually([&] { return static_cast<bool>(alice.run(alice.api().connect(server.url()))); }));
  auto r = alice.run(alice.api().register_account("alice"));
  ASSERT_TRUE(r) << client::describe(r.error());
  alice.device_id = r->device_id();
  alice.token = r->token();
  alice.login_on_this_connection();
  raw_socket after_login(server.port());
  ASSERT_TRUE(after_login.ok());
  EXPECT_TRUE(after_login.upgrade()) << "two idle and alice's authenticated connection";
  raw_socket over(server.port());
  EXPECT_EQ(over.read().rfind("HTTP/1.1 503", 0), 0u) << "the fourth unauthenticated again";

  idle.clear();
  EXPECT_TRUE(eventually([&] {
    return http_get(server.port(), "/metrics")
               .find("parley_connections_refused_per_address_total 2\n") != std::string::npos;
  }));
}

// --- memory --------------------------------------------------------------------------------------

TEST(faults, thousands_of_hostile_sockets_keep_memory_bounded) {
  boost::asio::io_context io;
  const auto env = env_for_rss_bounds();
  // 12 MiB for every connection's buffers together.
  constexpr long long budget = 12u << 20;
  server_process server({},
                        std::string(no_rate_limits) +
                            "[connections]\nmemory_budget_bytes = " + std::to_string(budget) + "\n",
                        env);
  const long rss_before = server.rss_kb();

  // 2,000 unauthenticated sockets, each parking a partial message of 4 KiB (the limit before
  // authentication): one byte more, or a header announcing more, is refused with 1009.
  std::vector<std::unique_ptr<raw_socket>> hostile;
  for (int i = 0; i < 2000; ++i) {
    auto s = std::make_unique<raw_socket>(server.port());
    ASSERT_TRUE(s->ok() && s->upgrade()) << i;
    const std::string frame = test_support::ws_client_frame(0x82, std::string(4096, 'h'));
    s->write(frame.substr(0, frame.size() - 1));  // all but the last byte
    hostile.push_back(std::move(s));
  }
  raw_socket too_big(server.port());
  ASSERT_TRUE(too_big.upgrade());
  too_big.write(test_support::ws_client_frame(0x82, std::string(4097, 'h')).substr(0, 100));
  const auto answer = too_big.read();
  ASSERT_GE(answer.size(), 4u);
  EXPECT_EQ(static_cast<unsigned char>(answer[0]), 0x88);  // a close frame
  EXPECT_EQ((static_cast<unsigned char>(answer[2]) << 8) | static_cast<unsigned char>(answer[3]),
            1009);
  // At the limit the whole message is taken: it is no Frame, so the answer is an Error frame
  // (binary, 0x82), not a close.
  raw_socket at_limit(server.port());
  ASSERT_TRUE(at_limit.upgrade());
  at_limit.write(test_support::ws_client_frame(0x82, std::string(4096, 'h')));
  const auto taken = at_limit.read("\x82");
  ASSERT_FALSE(taken.empty());
  EXPECT_EQ(static_cast<unsigned char>(taken[0]), 0x82) << "a 4,096-byte message was refused";

  // 40 authenticated devices, each parking 240 KiB of a 250 KiB message: 9.4 MiB more, over
  // the budget in all. The server drops the largest holders until it is under 90 % of it.
  std::vector<std::unique_ptr<test_client>> devices;
  std::vector<std::unique_ptr<raw_socket>> heavy;
  for (int i = 0; i < 40; ++i) {
    test_client c(io, server.url());
    c.register_and_login("heavy" + std::to_string(i));
    c.disconnect();
    auto s = std::make_unique<raw_socket>(server.port());
    ASSERT_TRUE(s->upgrade());
    v2::Frame auth;
    auth.set_request_id(1);
    auth.mutable_authenticate()->set_device_id(c.device_id);
    auth.mutable_authenticate()->set_token(c.token);
    s->write(test_support::ws_client_frame(0x82, auth.SerializeAsString()));
    ASSERT_NE(s->read("\x82").size(), 0u);  // the Authenticated frame's first byte
    const std::string frame = test_support::ws_client_frame(0x82, std::string(250 * 1024, 'x'));
    s->write(frame.substr(0, 240 * 1024));
    heavy.push_back(std::move(s));
  }
  EXPECT_TRUE(eventually([&] {
    return metric(server.port(), "parley_connections_shed_total") > 0;
  })) << "nothing was shed";
  EXPECT_TRUE(eventually([&] { return metric(server.port(), "parley_buffered_bytes") <= budget; }));
  const long grown_kb = server.rss_kb() - rss_before;
  std::printf("server RSS grew %ld KiB with 2,000 hostile sockets and 40 heavy ones\n", grown_kb);
#if !defined(__SANITIZE_THREAD__)  // TSan's shadow memory grows with every byte touched
  // The budget (12 MiB), the sockets' own state (~2 KiB each: ~4 MiB) and allocator slack.
  EXPECT_LT(grown_kb, 48 * 1024);
#endif

  // Somebody else is still served.
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  alice.send("bob", "still served");
  EXPECT_TRUE(bob.next().has_envelope());
}

// --- rate limits ---------------------------------------------------------------------------------

TEST(faults, registration_and_failed_logins_are_rate_limited_per_address) {
  boost::asio::io_context io;
  server_process server({},
                        "[rate_limits]\nregister_per_address = 6\n"
                        "register_per_address_burst = 3\nbad_login_per_address = 6\n"
                        "bad_login_per_address_burst = 2\n");
  test_client c(io, server.url());
  c.connect();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.run(c.api().register_account("reg" + std::to_string(i))));
  }
  auto fourth = c.run(c.api().register_account("reg3"));
  ASSERT_FALSE(fourth);
  EXPECT_EQ(fourth.error().code, v2::ERROR_CODE_RATE_LIMITED);
  EXPECT_GT(fourth.error().retry_after_ms, 1000u);  // 6 a minute: one every 10 s
  EXPECT_LE(fourth.error().retry_after_ms, 10'000u);

  // Two wrong tokens, then even the right one is refused until the bucket refills.
  auto r = c.run(c.api().register_account("reg_x"));  // still limited: nothing created
  ASSERT_FALSE(r);
  test_client owner(io, server.url());
  owner.connect();
  for (int i = 0; i < 2; ++i) {
    auto bad = owner.run(owner.api().authenticate(1, std::string(32, 'w')));
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code, v2::ERROR_CODE_AUTH_FAILED);
  }
  auto limited = owner.run(owner.api().authenticate(1, std::string(32, 'w')));
  ASSERT_FALSE(limited);
  EXPECT_EQ(limited.error().code, v2::ERROR_CODE_RATE_LIMITED);
  EXPECT_GT(limited.error().retry_after_ms, 0u);
  EXPECT_EQ(metric(server.port(), "parley_auth_failures_total"), 2);
  EXPECT_GE(metric(server.port(), "parley_rate_limited_total"), 3);
}

TEST(faults, sends_key_fetches_and_typing_are_rate_limited_per_device) {
  boost::asio::io_context io;
  server_process server({},
                        "[rate_limits]\nsend_per_device = 1\nsend_per_device_burst = 5\n"
                        "key_fetch_per_device = 1\nkey_fetch_per_device_burst = 2\n"
                        "typing_per_device = 1\ntyping_per_device_burst = 1\n");
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  for (int i = 0; i < 5; ++i) alice.send("bob", "m" + std::to_string(i));
  auto sixth = alice.run(alice.api().send("bob", "m5", "over"));
  ASSERT_FALSE(sixth);
  EXPECT_EQ(sixth.error().code, v2::ERROR_CODE_RATE_LIMITED);
  EXPECT_GT(sixth.error().retry_after_ms, 0u);
  // Bob's own budget is untouched.
  bob.send("alice", "mine");

  for (int i = 0; i < 2; ++i) {
    auto f = alice.run(alice.api().fetch_keys("bob"));
    ASSERT_FALSE(f);
    EXPECT_EQ(f.error().code, v2::ERROR_CODE_NO_KEYS);  // allowed through, bob has no keys
  }
  auto third = alice.run(alice.api().fetch_keys("bob"));
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, v2::ERROR_CODE_RATE_LIMITED);

  v2::Frame typing;
  typing.mutable_typing()->set_peer("bob");
  typing.mutable_typing()->set_typing(true);
  ASSERT_TRUE(alice.run(alice.api().request(typing)));
  auto over = alice.run(alice.api().request(typing));
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, v2::ERROR_CODE_RATE_LIMITED);
}

// The other budgets: registrations for the whole server (the per-address one off), group
// changes per device (CreateGroup and UpdateGroup), and media requests per device (one budget
// for RequestUpload, RequestUploadParts and RequestDownload); and a group size lowered in
// the config. Each refusal changes nothing.
TEST(faults, registrations_group_changes_and_media_requests_are_rate_limited) {
  boost::asio::io_context io;
  server_process server(
      {},
      "[limits]\nmax_group_members = 3\n"
      "[rate_limits]\nregister_per_address = 0\nregister_global = 6\nregister_global_burst = 4\n"
      "group_change_per_device = 6\ngroup_change_per_device_burst = 3\n"
      "media_per_device = 6\nmedia_per_device_burst = 2\n");
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  auto carol = online(io, server.url(), "carol");
  auto dave = online(io, server.url(), "dave");
  test_client eve(io, server.url());
  eve.connect();
  auto refused = eve.run(eve.api().register_account("eve"));
  ASSERT_FALSE(refused) << "a fifth registration within the server's burst of 4";
  EXPECT_EQ(refused.error().code, v2::ERROR_CODE_RATE_LIMITED);
  EXPECT_GT(refused.error().retry_after_ms, 0u);
  EXPECT_EQ(code_of(alice.run(alice.api().fetch_keys("eve"))), v2::ERROR_CODE_UNKNOWN_USER)
      << "the refused registration made no account";

  // Group changes: three, then refused; the group keeps the last name that was accepted.
  auto team = alice.run(alice.api().create_group("team", {"bob"}));
  ASSERT_TRUE(team) << client::describe(team.error());
  const auto chat = team->chat_id();
  ASSERT_TRUE(alice.run(alice.api().update_group(chat, v2::GROUP_CHANGE_RENAME, {}, "one")));
  ASSERT_TRUE(alice.run(alice.api().update_group(chat, v2::GROUP_CHANGE_RENAME, {}, "two")));
  auto over = alice.run(alice.api().update_group(chat, v2::GROUP_CHANGE_RENAME, {}, "three"));
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, v2::ERROR_CODE_RATE_LIMITED);
  auto info = alice.run(alice.api().get_group(chat));
  ASSERT_TRUE(info) << client::describe(info.error());
  EXPECT_EQ(info->name(), "two");

  // max_group_members = 3, the creator included: 4 are refused, 3 pass, and an ADD to 3 is
  // refused (bob's own budget of three group changes).
  EXPECT_EQ(code_of(bob.run(bob.api().create_group("four", {"alice", "carol", "dave"}))),
            v2::ERROR_CODE_GROUP_FULL);
  auto three = bob.run(bob.api().create_group("three", {"alice", "carol"}));
  ASSERT_TRUE(three) << client::describe(three.error());
  EXPECT_EQ(three->members_size(), 3);
  EXPECT_EQ(
      code_of(bob.run(bob.api().update_group(three->chat_id(), v2::GROUP_CHANGE_ADD, "dave"))),
      v2::ERROR_CODE_GROUP_FULL);

  // Media: two requests of any of the three kinds, then the third is refused.
  const std::string hash(32, 'h');
  ASSERT_TRUE(carol.run(carol.api().request_upload(1000, hash)));
  auto slot = carol.run(carol.api().request_upload(1000, hash));
  ASSERT_TRUE(slot) << client::describe(slot.error());
  EXPECT_EQ(code_of(carol.run(carol.api().request_download(chat, 1))), v2::ERROR_CODE_RATE_LIMITED);
  EXPECT_EQ(code_of(carol.run(carol.api().request_upload_parts(slot->media_id(), "u"))),
            v2::ERROR_CODE_RATE_LIMITED);
  EXPECT_EQ(code_of(carol.run(carol.api().request_upload(1000, hash))),
            v2::ERROR_CODE_RATE_LIMITED);
  // Dave's budget is his own.
  EXPECT_TRUE(dave.run(dave.api().request_upload(1000, hash)));
}

// A writer queue of one: sends that find it taken get BUSY with a retry time, the metric
// counts each, and nothing is lost: exactly the accepted sends are delivered, and the refused
// ones go through when retried.
TEST(faults, a_full_writer_queue_answers_busy_and_loses_nothing) {
  boost::asio::io_context io;
  server_process server({}, "[storage]\nmax_pending_writes = 1\n");
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");

  // 200 sends back to back: each commit waits for an fsync, and the queue holds one request.
  const auto results = alice.send_pipelined("bob", 200, "b");
  std::vector<int> refused;
  int ok = 0;
  for (int i = 0; i < 200; ++i) {
    const auto& r = results[i];
    if (r) {
      ++ok;
      continue;
    }
    ASSERT_EQ(r.error().code, v2::ERROR_CODE_BUSY) << client::describe(r.error());
    EXPECT_EQ(r.error().retry_after_ms, 100u);
    refused.push_back(i);
  }
  ASSERT_FALSE(refused.empty()) << "the queue never filled";
  EXPECT_GT(ok, 0);
  EXPECT_EQ(metric(server.port(), "parley_store_busy_total"),
            static_cast<long long>(refused.size()));
  // Retried one at a time (the same client_msg_id), each is stored once.
  for (int i : refused) alice.send("bob", "x", "b" + std::to_string(i));
  std::set<std::uint64_t> seqs;
  for (const auto& e : bob.envelopes(200)) EXPECT_TRUE(seqs.insert(e.seq()).second);
  EXPECT_EQ(seqs.size(), 200u);
  ASSERT_FALSE(seqs.empty());
  EXPECT_EQ(*seqs.rbegin(), 200u) << "a seq for each message, no gaps";
}

// --- HTTP and the metrics address --------------------------------------------------------------

TEST(faults, malformed_http_gets_a_status_line) {
  server_process server;
  const auto status = [&](const std::string& request) {
    const auto r = http_exchange(server.port(), request);
    return r.substr(0, r.find("\r\n"));
  };
  EXPECT_EQ(status("\x16\x03\x01 definitely not http\r\n\r\n"), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(status("GET / HTTP/9.9\r\nHost: x\r\n\r\n"), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(status("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n"),
            "HTTP/1.1 431 Request Header Fields Too Large");
  EXPECT_EQ(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" +
                   std::string(100000, 'b')),
            "HTTP/1.1 413 Payload Too Large");
  EXPECT_EQ(http_get(server.port(), "/healthz"), "ok\n");
}

// protocol.md §1: each request must arrive within 30 s of the connection or of the previous
// answer; a connection that does not send one is closed without an answer. Three connections
// idle at once: one that never sent anything, one idle after a keep-alive answer, and one that
// stopped in the middle of its request line (a WebSocket handshake that never finished).
TEST(faults, an_http_connection_idle_for_30_seconds_is_closed_without_an_answer) {
  server_process server;
  const auto port = server.port();
  auto silent = std::async(std::launch::async, [port] { return wait_for_close(port, "", 45s); });
  auto kept = std::async(std::launch::async, [port] {
    return wait_for_close(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 45s);
  });
  auto cut = std::async(std::launch::async,
                        [port] { return wait_for_close(port, "GET /v2/ws HTTP/1.1\r\nHo", 45s); });
  const auto check = [](const idle_outcome& o, const char* what) {
    EXPECT_GE(o.closed_after.count(), 29.5) << what;
    EXPECT_LT(o.closed_after.count(), 35.0) << what;
  };
  const auto s = silent.get();
  check(s, "silent from the start");
  EXPECT_EQ(s.received, "");
  const auto k = kept.get();
  check(k, "idle after an answer");
  EXPECT_EQ(k.received.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << k.received;
  EXPECT_EQ(k.received.substr(k.received.size() - 3), "ok\n") << "one answer, then nothing";
  const auto c = cut.get();
  check(c, "cut in its request line");
  EXPECT_EQ(c.received, "");
  EXPECT_EQ(http_get(server.port(), "/healthz"), "ok\n");
}

TEST(faults, metrics_can_have_an_address_of_their_own) {
  const int port = free_port();
  ASSERT_NE(port, 0);
  server_process server({"--metrics-listen", "127.0.0.1:" + std::to_string(port)});
  const auto m = static_cast<unsigned short>(port);
  EXPECT_NE(http_get(m, "/metrics").find("parley_connections "), std::string::npos);
  EXPECT_EQ(http_get(m, "/healthz"), "ok\n");
  EXPECT_EQ(http_get(server.port(), "/metrics"), "not found\n");
  EXPECT_EQ(http_get(server.port(), "/healthz"), "ok\n");
  raw_socket ws(m);
  EXPECT_FALSE(ws.upgrade());  // no WebSocket on the metrics address
}

// --- bad signatures ------------------------------------------------------------------------------

TEST(faults, uploads_with_bad_signatures_count_as_bad_frames) {
  boost::asio::io_context io;
  server_process server;
  auto alice = online(io, server.url(), "alice");
  v2::Frame upload;
  auto* u = upload.mutable_upload_keys();
  u->set_identity_key(std::string("\x05", 1) + std::string(32, 'i'));
  u->set_registration_id(7);
  u->mutable_signed_prekey()->set_id(1);
  u->mutable_signed_prekey()->set_public_key(std::string("\x05", 1) + std::string(32, 's'));
  u->mutable_signed_prekey()->set_signature(std::string(64, 'z'));
  bool closed = false;
  for (int i = 0; i < 40 && !closed; ++i) {
    auto r = alice.run(alice.api().request(upload));
    ASSERT_FALSE(r);
    if (r.error().what == client::client_error::kind::closed) {
      closed = true;
      break;
    }
    EXPECT_EQ(r.error().code, v2::ERROR_CODE_BAD_SIGNATURE);
  }
  EXPECT_TRUE(closed) << "bad signatures never closed the connection";
}

}  // namespace
}  // namespace parley::test
