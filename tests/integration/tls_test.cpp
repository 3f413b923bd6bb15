// TLS end to end: parleyd with a certificate the test makes (openssl req), SDK clients and the
// CLI on wss:// verifying it, refusals of the wrong trust, plain ws:// on the TLS port, files
// over https:// to the blob server with the same certificate, a reload on SIGHUP (of both),
// and plain ws:// and http:// refused off loopback.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "client/blob_transfer.hpp"
#include "media/chunked_cipher.hpp"
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
  std::string ca1() const { return (dir.path() / "ca1.pem").string(); }

  // A file of `size` random-ish bytes encrypted for upload; its slot from `who`.
  struct upload_case {
    fs::path cipher;
    media::sealed_file file;
    v2::UploadSlot slot;
  };
  upload_case slot_for(test_client& who, const std::string& name, std::size_t size) {
    upload_case u;
    const auto plain = dir.path() / (name + ".bin");
    {
      std::ofstream out(plain, std::ios::binary);
      for (std::size_t i = 0; i < size; ++i) out.put(static_cast<char>(i * 131 + 7));
    }
    u.cipher = dir.path() / (name + ".enc");
    auto sealed = media::encrypt_file(plain, u.cipher, media::new_media_key());
    EXPECT_TRUE(sealed);
    if (sealed) u.file = *sealed;
    auto slot = who.run(who.api().request_upload(
        u.file.size, std::string(reinterpret_cast<const char*>(u.file.sha256.data()), 32)));
    EXPECT_TRUE(slot) << client::describe(slot.error());
    if (slot) u.slot = *slot;
    return u;
  }

  // parleyd with the test's certificate, and alice and bob on it over wss:// trusting it.
  struct two_on_tls {
    explicit two_on_tls(tls& t)
        : server({"--tls-cert", t.cert().string(), "--tls-key", t.key().string()}),
          alice(t.io, wss_url(server)),
          bob(t.io, wss_url(server)) {
      t.trust_and_join(alice, "alice");
      t.trust_and_join(bob, "bob");
    }
    server_process server;
    test_client alice;
    test_client bob;
  };

  test_support::temp_dir dir{"parley_tls_"};
  boost::asio::io_context io;
};

TEST_F(tls, clients_verify_the_certificate_and_chat_over_wss) {
  two_on_tls two(*this);
  auto& [server, alice, bob] = two;
  const std::string url = wss_url(server);

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

// protocol.md §1: the TLS handshake must end within 10 s. A connection that sends the start of
// a TLS record and then nothing is dropped then, without an answer, and others are served.
TEST_F(tls, a_tls_handshake_that_does_not_finish_is_dropped_after_10_seconds) {
  server_process server({"--tls-cert", cert().string(), "--tls-key", key().string()});
  const auto o = wait_for_close(server.port(), std::string("\x16\x03\x01", 3), 20s);
  EXPECT_GE(o.closed_after.count(), 9.5);
  EXPECT_LT(o.closed_after.count(), 13.0);
  EXPECT_EQ(o.received, "");
  test_client alice(io, wss_url(server));
  trust_and_join(alice, "alice");
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

  // The blob server's new connections have the new certificate too.
  auto u = slot_for(bob, "after-reload", 70'000);
  const auto old_ca = client::upload(u.slot.url(), u.cipher, {}, ca1());
  ASSERT_FALSE(old_ca);
  EXPECT_NE(old_ca.error().message.find("certificate verify failed"), std::string::npos)
      << client::describe(old_ca.error());
  const auto new_ca = client::upload(u.slot.url(), u.cipher, {}, cert().string());
  EXPECT_TRUE(new_ca) << client::describe(new_ca.error());
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

TEST_F(tls, files_go_over_https_to_the_blob_server_with_the_same_certificate) {
  two_on_tls two(*this);
  auto& [server, alice, bob] = two;

  auto u = slot_for(alice, "photo", 300'000);
  ASSERT_EQ(u.slot.url().rfind("https://127.0.0.1:", 0), 0u) << u.slot.url();
  const auto blob_file = server.data_dir() / "data" / "media" / "blobs";
  const auto stored = [&] {
    std::size_t n = 0;
    if (fs::exists(blob_file)) {
      for (const auto& e : fs::recursive_directory_iterator(blob_file)) n += e.is_regular_file();
    }
    return n;
  };

  // Without the CA the certificate is refused, and plain http:// to the TLS port gets
  // nowhere: nothing is stored either way.
  const auto untrusted = client::upload(u.slot.url(), u.cipher, {});
  ASSERT_FALSE(untrusted);
  EXPECT_EQ(untrusted.error().code, client::transfer_error::errc::connect);
  EXPECT_NE(untrusted.error().message.find("certificate verify failed"), std::string::npos)
      << client::describe(untrusted.error());
  std::string plain_url = u.slot.url();
  plain_url.erase(4, 1);  // https:// -> http://
  EXPECT_FALSE(client::upload(plain_url, u.cipher, {}));
  EXPECT_EQ(stored(), 0u);

  const auto put = client::upload(u.slot.url(), u.cipher, {}, ca1());
  ASSERT_TRUE(put) << client::describe(put.error());
  auto sent = alice.run(alice.api().send("bob", "m1", "x", v2::CIPHER_TYPE_SIGNAL_MESSAGE, 0,
                                         u.slot.media_id()));
  ASSERT_TRUE(sent) << client::describe(sent.error());
  auto where = bob.run(bob.api().request_download(sent->chat_id(), sent->seq()));
  ASSERT_TRUE(where);
  ASSERT_EQ(where->url().rfind("https://127.0.0.1:", 0), 0u) << where->url();
  const auto got = dir.path() / "bob.part";
  // Cut short, then resumed with a Range request: over TLS both times.
  auto first = client::download(where->url(), got, where->size(), {}, ca1());
  ASSERT_TRUE(first) << client::describe(first.error());
  fs::resize_file(got, 100'000);
  auto resumed = client::download(where->url(), got, where->size(), {}, ca1());
  ASSERT_TRUE(resumed) << client::describe(resumed.error());
  std::ifstream a(u.cipher, std::ios::binary), b(got, std::ios::binary);
  const std::istreambuf_iterator<char> end;
  EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(a), end,
                         std::istreambuf_iterator<char>(b), end))
      << "the ciphertext came back byte for byte";
}

TEST_F(tls, with_a_certificate_the_blob_server_may_listen_off_loopback) {
  // The blob server takes the main address's host by default, and speaks TLS there.
  server_process ok({"--listen", "0.0.0.0:0", "--tls-cert", cert().string(), "--tls-key",
                     key().string()});
  EXPECT_GT(ok.port(), 0);
}

TEST(tls_policy, a_plain_blob_server_is_refused_off_loopback) {
  EXPECT_THROW(server_process({"--listen", "127.0.0.1:0", "--media-listen", "0.0.0.0:0"}),
               std::runtime_error);
  server_process ok({"--listen", "127.0.0.1:0", "--media-listen", "127.0.0.1:0"});
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
