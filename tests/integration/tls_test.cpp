// TLS end to end: parleyd with a certificate the test makes (openssl req), SDK clients and the
// CLI on wss:// verifying it, refusals of the wrong trust, plain ws:// on the TLS port, a
// reload on SIGHUP, and plain ws:// refused off loopback.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "self_signed_certificate.hpp"
#include "temp_dir.hpp"
#include "test_client.hpp"

namespace parley::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using test_support::make_certificate;

std::string wss_url(const server_process& server) {
  return "wss://localhost:" + std::to_string(server.port());
}

class tls : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(make_certificate(cert(), key(), "parley-test-1"));
    // The CA the clients trust: a copy, so that replacing the server's files later does not
    // change what a client trusts.
    fs::copy_file(cert(), dir.path() / "ca1.pem");
  }
  fs::path cert() const { return dir.path() / "cert.pem"; }
  // `c` trusts the first certificate's copy only, registers as `name` and drains.
  void trust_and_join(test_client& c, const std::string& name) {
    c.api().set_ca_file((dir.path() / "ca1.pem").string());
    c.register_and_login(name);
    c.drain();
  }
  fs::path key() const { return dir.path() / "key.pem"; }

  test_support::temp_dir dir{"parley_tls_"};
  boost::asio::io_context io;
};

TEST_F(tls, clients_verify_the_certificate_and_chat_over_wss) {
  server_process server({"--tls-cert", cert().string(), "--tls-key", key().string()});
  const std::string url = wss_url(server);
  test_client alice(io, url);
  trust_and_join(alice, "alice");
  test_client bob(io, url);
  trust_and_join(bob, "bob");

  // Large enough to span several TLS records, both ways.
  const std::string big(60 * 1024, 'w');
  alice.send("bob", big);
  auto f = bob.next();
  ASSERT_TRUE(f.has_envelope());
  EXPECT_EQ(f.envelope().payload(), big);
  bob.ack({test_client::cursor_of(f.envelope())});
  const auto receipt = alice.next();  // ✓✓, over TLS too
  ASSERT_TRUE(receipt.has_receipts()) << receipt.ShortDebugString();
  ASSERT_EQ(receipt.receipts().receipts_size(), 1);
  EXPECT_EQ(receipt.receipts().receipts(0).status(), v2::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(receipt.receipts().receipts(0).up_to_seq(), f.envelope().seq());
  bob.send("alice", "back over TLS");
  EXPECT_TRUE(alice.next().has_envelope());

  // Trust nothing but the system store: the self-signed certificate is refused.
  client::client stranger(io.get_executor());
  auto r = block_on(io, stranger.connect(url));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("certificate verify failed"), std::string::npos)
      << r.error().message;

  // Plain ws:// to the TLS port gets nowhere.
  client::client plain(io.get_executor());
  EXPECT_FALSE(block_on(io, plain.connect(server.url())));
}

TEST_F(tls, a_reloaded_certificate_serves_new_connections_and_old_ones_go_on) {
  server_process server({"--tls-cert", cert().string(), "--tls-key", key().string()});
  const std::string url = wss_url(server);
  test_client alice(io, url);
  trust_and_join(alice, "alice");

  // A new certificate in place, then SIGHUP.
  ASSERT_TRUE(make_certificate(dir.path() / "cert2.pem", dir.path() / "key2.pem", "test-2"));
  fs::rename(dir.path() / "cert2.pem", cert());
  fs::rename(dir.path() / "key2.pem", key());
  ASSERT_EQ(::kill(server.pid(), SIGHUP), 0);

  // New connections get the new certificate: the old CA no longer verifies it (retried until
  // the reload has happened), the new one does.
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    client::client c(io.get_executor());
    c.set_ca_file((dir.path() / "ca1.pem").string());
    refused = !block_on(io, c.connect(url));
    if (!refused) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(refused) << "the reload never took effect";
  test_client bob(io, url);
  bob.api().set_ca_file(cert().string());
  bob.register_and_login("bob");
  bob.drain();

  // Alice's connection, opened with the first certificate, is still served.
  bob.send("alice", "after the reload");
  EXPECT_TRUE(alice.next().has_envelope());
}

TEST_F(tls, the_cli_talks_wss_with_a_ca_file) {
  server_process server({"--tls-cert", cert().string(), "--tls-key", key().string()});
  const auto profile = dir.path() / "cli-alice";
  const std::string cmd = std::string(PARLEY_CLI_PATH) + " --server " + wss_url(server) +
                          " --ca '" + (dir.path() / "ca1.pem").string() + "' --profile '" +
                          profile.string() + "' register alice >/dev/null 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 0);
  // Without the CA the same server is refused.
  const std::string refused = std::string(PARLEY_CLI_PATH) + " --server " + wss_url(server) +
                              " --profile '" + (dir.path() / "cli-bob").string() +
                              "' register bob >/dev/null 2>&1";
  EXPECT_NE(WEXITSTATUS(std::system(refused.c_str())), 0);
}

TEST_F(tls, the_blob_server_is_kept_on_loopback_while_it_has_no_tls) {
  // TLS on a public address: the blob server (plain HTTP) would default to it too.
  EXPECT_THROW(server_process({"--listen", "0.0.0.0:0", "--tls-cert", cert().string(),
                               "--tls-key", key().string()}),
               std::runtime_error);
  server_process ok({"--listen", "0.0.0.0:0", "--tls-cert", cert().string(), "--tls-key",
                     key().string(), "--media-listen", "127.0.0.1:0"});
  EXPECT_GT(ok.port(), 0);
}

TEST(tls_policy, plain_ws_is_refused_off_loopback) {
  EXPECT_THROW(server_process({"--listen", "0.0.0.0:0"}), std::runtime_error);
  // Allowed when asked for (behind a TLS-terminating proxy).
  server_process ok({"--listen", "0.0.0.0:0", "--allow-plaintext"});
  EXPECT_GT(ok.port(), 0);
}

}  // namespace
}  // namespace parley::test
