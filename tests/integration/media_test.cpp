// Media against a real parleyd and its blob server: a file encrypted on the sender's device,
// uploaded through a presigned URL, referenced by a message, downloaded by the recipient and
// verified; the limits, the typed errors, who may fetch what, signed URLs, and the sweeper.
// The CLI's send-file and download are in cli_test.cpp.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <utime.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "client/blob_transfer.hpp"
#include "client/local_store.hpp"
#include "client/media_files.hpp"
#include "listening_process.hpp"
#include "media/chunked_cipher.hpp"
#include "self_signed_certificate.hpp"
#include "server_process.hpp"
#include "temp_dir.hpp"
#include "test_client.hpp"

namespace parley::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Bytes no encryption would leave in place: a marker repeated through the file.
constexpr std::string_view marker = "PARLEY-PLAINTEXT-MARKER-7f3a9c";

void write_file(const fs::path& p, std::uint64_t size, std::uint32_t seed) {
  std::ofstream out(p, std::ios::binary);
  std::mt19937 rng(seed);
  std::string block(64 * 1024, '\0');
  for (std::uint64_t done = 0; done < size;) {
    for (std::size_t i = 0; i < block.size(); i += 4) {
      const std::uint32_t v = rng();
      std::memcpy(block.data() + i, &v, 4);
    }
    block.replace(0, marker.size(), marker);
    const auto n = static_cast<std::streamsize>(std::min<std::uint64_t>(block.size(), size - done));
    out.write(block.data(), n);
    done += static_cast<std::uint64_t>(n);
  }
}

bool same_files(const fs::path& a, const fs::path& b) {
  std::ifstream x(a, std::ios::binary), y(b, std::ios::binary);
  std::istreambuf_iterator<char> end;
  return fs::file_size(a) == fs::file_size(b) &&
         std::equal(std::istreambuf_iterator<char>(x), end, std::istreambuf_iterator<char>(y));
}

// Whether any file under `dir` holds `needle`.
bool found_under(const fs::path& dir, std::string_view needle) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), {});
    if (data.find(needle) != std::string::npos) return true;
  }
  return false;
}

// True if no file under `dir` is named after the blob `id` (nothing of it went through there).
bool media_flow_files_absent(const fs::path& dir, const std::string& id) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().filename().string().rfind(id, 0) == 0) return false;
  }
  return true;
}

std::string bytes_of(std::span<const std::uint8_t> s) {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

// A file encrypted for upload: its ciphertext on disk, key and hash.
struct sealed {
  fs::path cipher;
  media::media_key key{};
  media::sealed_file file;
};

sealed seal(const fs::path& plain, const fs::path& cipher) {
  sealed out;
  out.cipher = cipher;
  out.key = media::new_media_key();
  auto r = media::encrypt_file(plain, cipher, out.key);
  EXPECT_TRUE(r) << r.error().message();
  if (r) out.file = *r;
  return out;
}

// A file of `size` bytes (write_file with `seed`) at dir/name, sealed into dir/<stem>.enc.
sealed write_and_seal(const fs::path& dir, const std::string& name, std::uint64_t size,
                      std::uint32_t seed) {
  const fs::path plain = dir / name;
  write_file(plain, size, seed);
  return seal(plain, dir / (plain.stem().string() + ".enc"));
}

class media_flow : public ::testing::Test {
 protected:
  explicit media_flow(std::string config = {}) : server({}, std::move(config)) {}

  // Uploads `s` as `who`; returns the UploadSlot.
  v2::UploadSlot upload(test_client& who, const sealed& s) {
    auto slot = who.run(who.api().request_upload(s.file.size, bytes_of(s.file.sha256)));
    EXPECT_TRUE(slot) << client::describe(slot.error());
    if (!slot) return {};
    auto put = client::upload(slot->url(), s.cipher, {});
    EXPECT_TRUE(put) << client::describe(put.error());
    return *slot;
  }

  server_process server;
  test_support::temp_dir dir{"parley_media_test_"};
  boost::asio::io_context io;
};

TEST_F(media_flow, a_file_goes_encrypted_through_the_blob_store_and_only_members_fetch_it) {
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  auto carol = online(io, server.url(), "carol");
  auto s = write_and_seal(dir.path(), "photo.jpg", 3'000'000 + 17, 1);
  const auto slot = upload(alice, s);
  ASSERT_EQ(slot.media_id().size(), 32u);

  auto sent = alice.run(alice.api().send("bob", "m1", "sealed-content",
                                         v2::CIPHER_TYPE_SIGNAL_MESSAGE, 0, slot.media_id()));
  ASSERT_TRUE(sent) << client::describe(sent.error());
  auto pushed = bob.next();
  ASSERT_TRUE(pushed.has_envelope());
  EXPECT_EQ(pushed.envelope().seq(), sent->seq());

  auto where = bob.run(bob.api().request_download(sent->chat_id(), sent->seq()));
  ASSERT_TRUE(where) << client::describe(where.error());
  EXPECT_EQ(where->media_id(), slot.media_id());
  EXPECT_EQ(where->size(), s.file.size);
  const auto partial = dir.path() / "bob.part";
  ASSERT_TRUE(client::download(where->url(), partial, where->size(), {}));
  auto opened = media::decrypt_file(partial, dir.path() / "bob.jpg", s.key, s.file.size,
                                    s.file.sha256);
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_TRUE(same_files(dir.path() / "photo.jpg", dir.path() / "bob.jpg"));

  // The sender may fetch it too; someone outside the chat may not.
  EXPECT_TRUE(alice.run(alice.api().request_download(sent->chat_id(), sent->seq())));
  EXPECT_EQ(code_of(carol.run(carol.api().request_download(sent->chat_id(), sent->seq()))),
            v2::ERROR_CODE_NOT_FOUND);
  // Neither the plaintext nor the key is anywhere under the server's data directory.
  EXPECT_FALSE(found_under(server.data_dir(), marker));
  EXPECT_FALSE(found_under(server.data_dir(), bytes_of(s.key)));
  EXPECT_TRUE(found_under(dir.path(), marker)) << "the search itself finds the marker";
}

TEST_F(media_flow, slots_and_sends_are_checked_with_typed_errors) {
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  const std::string hash(32, 'h');
  const std::uint64_t largest = media::ciphertext_size(media::max_media_plain_bytes);
  EXPECT_EQ(largest, 100'024'416u) << "wire::limits::max_media_bytes";
  EXPECT_EQ(code_of(alice.run(alice.api().request_upload(largest + 1, hash))),
            v2::ERROR_CODE_MEDIA_TOO_LARGE);
  EXPECT_EQ(code_of(alice.run(alice.api().request_upload(0, hash))),
            v2::ERROR_CODE_INVALID_ARGUMENT);
  EXPECT_EQ(code_of(alice.run(alice.api().request_upload(100, "short"))),
            v2::ERROR_CODE_INVALID_ARGUMENT);
  auto slot = alice.run(alice.api().request_upload(largest, hash));
  ASSERT_TRUE(slot) << "the largest file's ciphertext is allowed";

  // A media id that is not one, one that does not exist, and another account's.
  EXPECT_EQ(code_of(alice.run(alice.api().send("bob", "m1", "x", v2::CIPHER_TYPE_SIGNAL_MESSAGE,
                                               0, "not-hex"))),
            v2::ERROR_CODE_INVALID_ARGUMENT);
  EXPECT_EQ(code_of(alice.run(alice.api().send("bob", "m2", "x", v2::CIPHER_TYPE_SIGNAL_MESSAGE,
                                               0, std::string(32, 'a')))),
            v2::ERROR_CODE_MEDIA_NOT_FOUND);
  EXPECT_EQ(code_of(bob.run(bob.api().send("alice", "m3", "x", v2::CIPHER_TYPE_SIGNAL_MESSAGE, 0,
                                           slot->media_id()))),
            v2::ERROR_CODE_MEDIA_NOT_FOUND);
  // Nothing was appended by the refusals: the first message of the chat is seq 1.
  auto text = alice.run(alice.api().send("bob", "m4", "x"));
  ASSERT_TRUE(text);
  EXPECT_EQ(text->seq(), 1u);
  EXPECT_EQ(code_of(bob.run(bob.api().request_download(text->chat_id(), text->seq()))),
            v2::ERROR_CODE_NOT_FOUND)
      << "a message without a file";

  // The local store has no multipart uploads: RequestUploadParts is refused, and refused
  // as often as a client pipelines it, without counting as bad frames (16 of those close
  // the connection with 1008).
  constexpr int asked = 20;
  const auto refusals = alice.pipelined(
      asked, [&](int) { return alice.api().request_upload_parts(slot->media_id(), "upload-1"); });
  EXPECT_EQ(
      std::count_if(refusals.begin(), refusals.end(),
                    [](const auto& r) { return code_of(r) == v2::ERROR_CODE_INVALID_ARGUMENT; }),
      asked);
  auto after = alice.run(alice.api().send("bob", "m5", "still connected"));
  ASSERT_TRUE(after) << client::describe(after.error());
  EXPECT_EQ(after->seq(), 2u);
}

TEST_F(media_flow, signed_urls_refuse_tampering_other_blobs_and_wrong_sizes) {
  auto alice = online(io, server.url(), "alice");
  auto a = write_and_seal(dir.path(), "a.bin", 200'000, 2);
  auto slot = alice.run(alice.api().request_upload(a.file.size, bytes_of(a.file.sha256)));
  ASSERT_TRUE(slot);
  auto other = alice.run(alice.api().request_upload(a.file.size, bytes_of(a.file.sha256)));
  ASSERT_TRUE(other);

  auto status_of = [](const client::transfer_result<void>& r) {
    return r ? 0u : r.error().status;
  };
  // One character of the signature changed.
  std::string tampered = slot->url();
  tampered.back() = tampered.back() == '0' ? '1' : '0';
  EXPECT_EQ(status_of(client::upload(tampered, a.cipher, {})), 403u);
  // The URL of one blob used for another.
  std::string swapped = slot->url();
  swapped.replace(swapped.find(slot->media_id()), 32, other->media_id());
  EXPECT_EQ(status_of(client::upload(swapped, a.cipher, {})), 403u);
  // The declared size changed in the URL.
  std::string resized = slot->url();
  const auto at = resized.find("size=") + 5;
  resized.replace(at, resized.find('&', at) - at, std::to_string(a.file.size + 1));
  EXPECT_EQ(status_of(client::upload(resized, a.cipher, {})), 403u);
  // A body that is not the declared ciphertext: refused on its hash, nothing kept.
  auto b = write_and_seal(dir.path(), "b.bin", 200'000, 3);
  ASSERT_EQ(b.file.size, a.file.size);
  EXPECT_EQ(status_of(client::upload(slot->url(), b.cipher, {})), 400u);
  // The real one goes through afterwards.
  EXPECT_EQ(status_of(client::upload(slot->url(), a.cipher, {})), 0u);
}

class media_sweep : public media_flow {
 protected:
  media_sweep()
      : media_flow(
            "[media]\nquota_bytes = 1000000\nupload_url_ttl_s = 2\nunreferenced_retention_s = 5\n"
            "sweep_interval_s = 1\ndownload_url_ttl_s = 1\n") {}
};

TEST_F(media_sweep, unreferenced_uploads_and_orphans_are_deleted_and_the_quota_freed) {
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  auto a = write_and_seal(dir.path(), "a.bin", 600'000, 4);
  const auto kept = upload(alice, a);  // sent: referenced, kept
  auto sent = alice.run(alice.api().send("bob", "m1", "x", v2::CIPHER_TYPE_SIGNAL_MESSAGE, 0,
                                         kept.media_id()));
  ASSERT_TRUE(sent);
  // download_url_ttl_s = 1: a download URL asked for now has expired once the sweep below is
  // done.
  auto early = bob.run(bob.api().request_download(sent->chat_id(), sent->seq()));
  ASSERT_TRUE(early) << client::describe(early.error());
  auto b = write_and_seal(dir.path(), "b.bin", 300'000, 5);
  const auto abandoned = upload(alice, b);  // never sent
  // The quota holds both (600 kB + 300 kB of 1 MB): one more 300 kB slot is refused.
  EXPECT_EQ(code_of(alice.run(alice.api().request_upload(b.file.size, bytes_of(b.file.sha256)))),
            v2::ERROR_CODE_QUOTA_EXCEEDED);
  // An orphan: a blob file the store has no record of, written long ago.
  const auto orphan_id = std::string(32, 'e');
  const auto blobs = server.data_dir() / "data" / "media" / "blobs";  // --data is data_dir/data
  const auto orphan = blobs / "ee" / orphan_id;
  fs::create_directories(orphan.parent_path());
  std::ofstream(orphan) << "left over";
  struct utimbuf old {100, 100};
  ASSERT_EQ(::utime(orphan.c_str(), &old), 0);

  auto blob_path = [&](const std::string& id) {
    return blobs / id.substr(0, 2) / id;
  };
  ASSERT_TRUE(fs::exists(blob_path(abandoned.media_id())));
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while ((fs::exists(blob_path(abandoned.media_id())) || fs::exists(orphan)) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_FALSE(fs::exists(blob_path(abandoned.media_id()))) << "the abandoned upload";
  EXPECT_FALSE(fs::exists(orphan)) << "the orphan";
  EXPECT_TRUE(fs::exists(blob_path(kept.media_id()))) << "a referenced blob stays";
  std::this_thread::sleep_for(1100ms);  // at least 2 s after `early`, whatever the sweep took
  auto expired = client::download(early->url(), dir.path() / "early.part", early->size(), {});
  ASSERT_FALSE(expired) << "a download URL past download_url_ttl_s";
  EXPECT_EQ(expired.error().status, 403u) << client::describe(expired.error());
  auto fresh = bob.run(bob.api().request_download(sent->chat_id(), sent->seq()));
  ASSERT_TRUE(fresh) << client::describe(fresh.error());
  EXPECT_TRUE(client::download(fresh->url(), dir.path() / "fresh.part", fresh->size(), {}));
  // The abandoned upload's bytes are back in the quota.
  EXPECT_TRUE(alice.run(alice.api().request_upload(b.file.size, bytes_of(b.file.sha256))));
}

TEST_F(media_flow, a_100_mb_file_round_trips_and_one_byte_more_is_refused) {
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  auto s = write_and_seal(dir.path(), "big.bin", media::max_media_plain_bytes, 6);
  ASSERT_EQ(s.file.size, 100'024'416u);
  const auto slot = upload(alice, s);
  auto sent = alice.run(alice.api().send("bob", "m1", "x", v2::CIPHER_TYPE_SIGNAL_MESSAGE, 0,
                                         slot.media_id()));
  ASSERT_TRUE(sent);
  auto where = bob.run(bob.api().request_download(sent->chat_id(), sent->seq()));
  ASSERT_TRUE(where);
  const auto partial = dir.path() / "big.part";
  auto got = client::download(where->url(), partial, where->size(), {});
  ASSERT_TRUE(got) << client::describe(got.error());
  fs::remove(dir.path() / "big.enc");  // room on /tmp before the plaintext copy
  ASSERT_TRUE(media::decrypt_file(partial, dir.path() / "big.out", s.key, s.file.size,
                                  s.file.sha256));
  fs::remove(partial);
  EXPECT_TRUE(same_files(dir.path() / "big.bin", dir.path() / "big.out"));
  fs::remove(dir.path() / "big.out");

  // One byte more: the SDK refuses to encrypt it, and the server refuses its slot.
  {
    std::ofstream grow(dir.path() / "big.bin", std::ios::app | std::ios::binary);
    grow.put('x');
  }
  auto key = media::new_media_key();
  auto refused = media::encrypt_file(dir.path() / "big.bin", dir.path() / "big2.enc", key);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error(), media::errc::too_large);
  EXPECT_EQ(code_of(alice.run(alice.api().request_upload(
                media::ciphertext_size(media::max_media_plain_bytes + 1), std::string(32, 'h')))),
            v2::ERROR_CODE_MEDIA_TOO_LARGE);
}


// --- the S3 blob store, against s3rver (npm; scripts/setup installs it) ---------------------

class s3rver_process {
 public:
  // Over HTTPS when given a PEM key and certificate.
  explicit s3rver_process(const fs::path& dir, const fs::path& key = {},
                          const fs::path& cert = {}, unsigned short port = 0) {
    std::vector<std::string> argv{NODE_PATH_EXECUTABLE, S3RVER_LAUNCHER, dir.string(),
                                  std::to_string(port)};
    if (!key.empty()) argv.insert(argv.end(), {key.string(), cert.string()});
    auto p = test_support::spawn_listening(
        argv, {"NODE_PATH=" S3RVER_NODE_MODULES, "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"});
    pid_ = p.pid;
    port_ = p.port;
  }
  ~s3rver_process() { stop(SIGTERM); }
  // Stops it at once (a crash, for the tests of what a client does when the store goes away).
  void kill_now() { stop(SIGKILL); }
  s3rver_process(const s3rver_process&) = delete;
  s3rver_process& operator=(const s3rver_process&) = delete;
  unsigned short port() const { return port_; }

 private:
  void stop(int signal) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  pid_t pid_ = -1;
  unsigned short port_ = 0;
};

// Whether s3rver, its data under `dir`, holds an object named `id` (its files are named after
// the key).
bool s3_holds(const fs::path& dir, const std::string& id) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().filename().string().rfind(id, 0) == 0) return true;
  }
  return false;
}

// Whether the object `id` is gone within 20 s (the sweeper's DELETE), checked every 100 ms.
bool s3_drops_within_20s(const fs::path& dir, const std::string& id) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (s3_holds(dir, id) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(100ms);
  return !s3_holds(dir, id);
}

class media_s3 : public ::testing::Test {
 protected:
  media_s3() : media_s3({}, {}) {}
  // Over https:// with this PEM key and certificate, which parleyd's DELETEs trust. URLs live
  // `ttl_s` and unsent uploads `retention_s` (short by default: the expiry and sweep tests; at
  // least twice the URLs' lifetime, as an S3 store requires).
  media_s3(const fs::path& key, const fs::path& cert, int ttl_s = 2, int retention_s = 4)
      : s3(s3_dir.path(), key, cert), server({}, config(s3.port(), cert, ttl_s, retention_s)) {}
  static std::string config(unsigned short port, const fs::path& cert, int ttl_s,
                            int retention_s) {
    const std::string endpoint =
        (cert.empty() ? "http://127.0.0.1:" : "https://localhost:") + std::to_string(port);
    return "[media]\nstore = \"s3\"\ns3_endpoint = \"" + endpoint +
           "\"\ns3_bucket = \"parley\"\ns3_access_key = \"S3RVER\"\n"
           "s3_secret_key = \"S3RVER\"\nupload_url_ttl_s = " + std::to_string(ttl_s) +
           "\nunreferenced_retention_s = " + std::to_string(retention_s) +
           "\nsweep_interval_s = 1\n" +
           (cert.empty() ? "" : "s3_ca_file = \"" + cert.string() + "\"\n");
  }
  bool stored(const std::string& id) const { return s3_holds(s3_dir.path(), id); }

  test_support::temp_dir s3_dir{"parley_s3rver_"};
  s3rver_process s3;
  server_process server;
  test_support::temp_dir dir{"parley_media_s3_test_"};
  boost::asio::io_context io;
};

TEST_F(media_s3, a_file_goes_through_an_s3_store_that_parleyd_only_signs_for) {
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  auto s = write_and_seal(dir.path(), "clip.mp4", 3'000'000 + 5, 7);
  auto slot = alice.run(alice.api().request_upload(s.file.size, bytes_of(s.file.sha256)));
  ASSERT_TRUE(slot) << client::describe(slot.error());
  EXPECT_EQ(slot->url().rfind("http://127.0.0.1:" + std::to_string(s3.port()) + "/parley/" +
                                  slot->media_id() + "?",
                              0),
            0u)
      << slot->url();
  EXPECT_NE(slot->url().find("X-Amz-Signature="), std::string::npos);
  // s3rver checks a presigned URL's expiry (the next test) but not its V4 signature (a changed
  // signature goes through): the signer is proven against AWS's published vectors in
  // src/media/s3/sigv4_test.cpp, and tampering is shown refused on the local store.
  auto put = client::upload(slot->url(), s.cipher, {});
  ASSERT_TRUE(put) << client::describe(put.error());
  EXPECT_TRUE(stored(slot->media_id())) << "the object store has it";
  EXPECT_TRUE(media_flow_files_absent(server.data_dir(), slot->media_id()))
      << "no byte went through parleyd";

  auto sent = alice.run(alice.api().send("bob", "m1", "x", v2::CIPHER_TYPE_SIGNAL_MESSAGE, 0,
                                         slot->media_id()));
  ASSERT_TRUE(sent);
  auto where = bob.run(bob.api().request_download(sent->chat_id(), sent->seq()));
  ASSERT_TRUE(where);
  const auto partial = dir.path() / "bob.part";
  auto got = client::download(where->url(), partial, where->size(), {});
  ASSERT_TRUE(got) << client::describe(got.error());
  ASSERT_TRUE(media::decrypt_file(partial, dir.path() / "bob.mp4", s.key, s.file.size,
                                  s.file.sha256));
  EXPECT_TRUE(same_files(dir.path() / "clip.mp4", dir.path() / "bob.mp4"));
  EXPECT_FALSE(found_under(s3_dir.path(), marker)) << "the object store holds ciphertext only";

  // A resumed download through S3: the Range request continues a partial file.
  fs::resize_file(partial, 1'000'000);
  auto resumed = client::download(where->url(), partial, where->size(), {});
  ASSERT_TRUE(resumed) << client::describe(resumed.error());
  EXPECT_TRUE(media::decrypt_file(partial, dir.path() / "bob2.mp4", s.key, s.file.size,
                                  s.file.sha256));
}

TEST_F(media_s3, expired_urls_are_refused_and_unreferenced_objects_swept) {
  auto alice = online(io, server.url(), "alice");
  auto a = write_and_seal(dir.path(), "a.bin", 100'000, 8);
  auto late = alice.run(alice.api().request_upload(a.file.size, bytes_of(a.file.sha256)));
  ASSERT_TRUE(late);
  auto kept = alice.run(alice.api().request_upload(a.file.size, bytes_of(a.file.sha256)));
  ASSERT_TRUE(kept);
  ASSERT_TRUE(client::upload(kept->url(), a.cipher, {}));
  ASSERT_TRUE(stored(kept->media_id()));  // now: the sweep may take it from 4 s on
  std::this_thread::sleep_for(3s);  // past the 2 s URL lifetime
  auto refused = client::upload(late->url(), a.cipher, {});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().status, 403u) << client::describe(refused.error());
  EXPECT_FALSE(stored(late->media_id()));
  // Never sent: the sweeper deletes the object once the retention (4 s) has passed.
  EXPECT_TRUE(s3_drops_within_20s(s3_dir.path(), kept->media_id()))
      << "deleted with a signed DELETE";
}

// Files over one part (8 MiB) go to S3 as multipart uploads, and a cut one resumes with the
// parts the store kept. URLs live 15 minutes and unsent uploads an hour here.
class media_s3_multipart : public media_s3 {
 protected:
  media_s3_multipart() : media_s3({}, {}, 900, 3600) {}
};

// Part URLs expire a URL lifetime before the slot's record may be swept (its creation plus
// the retention), whenever they are asked for: an upload completed after the sweep would
// leave an object that nothing names and no sweep finds. Past that the slot is answered as
// swept. (URLs live 4 s, unsent slots 8 s: the parts' window ends 4 s after the slot.)
class media_s3_parts_window : public media_s3 {
 protected:
  media_s3_parts_window() : media_s3({}, {}, 4, 8) {}
};

TEST_F(media_s3_parts_window, part_urls_never_outlive_the_slots_record) {
  auto alice = online(io, server.url(), "alice");
  auto s = write_and_seal(dir.path(), "big.bin", 9'000'000, 5);
  auto slot = alice.run(alice.api().request_upload(s.file.size, bytes_of(s.file.sha256)));
  ASSERT_TRUE(slot) << client::describe(slot.error());
  ASSERT_FALSE(slot->multipart_url().empty());
  auto upload_id = client::start_multipart(slot->multipart_url());
  ASSERT_TRUE(upload_id) << client::describe(upload_id.error());
  std::this_thread::sleep_for(1s);
  auto parts = alice.run(alice.api().request_upload_parts(slot->media_id(), *upload_id));
  ASSERT_TRUE(parts) << client::describe(parts.error());
  // (The record's creation time is the store's, a few milliseconds after the slot's.)
  EXPECT_LE(parts->expires_at_ms(), slot->expires_at_ms() + 250)
      << "asked 1 s after the slot, the URLs must not live the full 4 s from now";
  std::this_thread::sleep_for(3500ms);
  EXPECT_EQ(code_of(alice.run(alice.api().request_upload_parts(slot->media_id(), *upload_id))),
            v2::ERROR_CODE_MEDIA_NOT_FOUND)
      << "past the window: the slot is too old to upload to";
}

// Whether s3rver, its data under `dir`, holds the multipart upload `upload_id` (started, not
// completed nor aborted: its parts are files under the bucket's uploads directory).
bool s3_holds_upload(const fs::path& dir, const std::string& upload_id) {
  return fs::exists(dir / "parley" / "._S3rver_uploads" / upload_id);
}

// A slot's start URL may start any number of uploads until it expires, but the first one the
// client asks part URLs for is bound to the slot: parts are signed for it alone, and the sweep
// aborts it (its parts go) with the record of a file never sent.
TEST_F(media_s3_parts_window, one_upload_per_slot_and_the_sweep_aborts_it) {
  auto alice = online(io, server.url(), "alice");
  auto s = write_and_seal(dir.path(), "big.bin", 9'000'000, 6);
  auto slot = alice.run(alice.api().request_upload(s.file.size, bytes_of(s.file.sha256)));
  ASSERT_TRUE(slot) << client::describe(slot.error());
  ASSERT_FALSE(slot->multipart_url().empty());
  auto first = client::start_multipart(slot->multipart_url());
  ASSERT_TRUE(first) << client::describe(first.error());
  auto second = client::start_multipart(slot->multipart_url());
  ASSERT_TRUE(second) << client::describe(second.error());
  ASSERT_NE(*first, *second);

  auto parts = alice.run(alice.api().request_upload_parts(slot->media_id(), *first));
  ASSERT_TRUE(parts) << client::describe(parts.error());
  auto other = alice.run(alice.api().request_upload_parts(slot->media_id(), *second));
  ASSERT_FALSE(other) << "a second upload on the same slot gets no part URL";
  EXPECT_EQ(other.error().code, v2::ERROR_CODE_MEDIA_NOT_FOUND) << client::describe(other.error());
  auto again = alice.run(alice.api().request_upload_parts(slot->media_id(), *first));
  ASSERT_TRUE(again) << "the bound one goes on: " << client::describe(again.error());

  auto part = client::upload_part(parts->part_urls(0), s.cipher, 0, parts->part_size());
  ASSERT_TRUE(part) << client::describe(part.error());
  ASSERT_TRUE(s3_holds_upload(s3_dir.path(), *first));
  ASSERT_TRUE(s3_holds_upload(s3_dir.path(), *second));

  // Never completed nor sent: once the retention (8 s) has passed, the sweep deletes the
  // record and aborts the bound upload with a signed DELETE ?uploadId. The unbound one holds
  // no part and is left to the bucket's lifecycle rules (S3 lists uploads only bucket-wide).
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (s3_holds_upload(s3_dir.path(), *first) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(s3_holds_upload(s3_dir.path(), *first)) << "the bound upload was aborted";
  EXPECT_TRUE(s3_holds_upload(s3_dir.path(), *second));
  EXPECT_EQ(code_of(alice.run(alice.api().request_upload_parts(slot->media_id(), *first))),
            v2::ERROR_CODE_MEDIA_NOT_FOUND)
      << "the record went with it";
}

// An abort the store refuses (here 400 to an id it cannot parse: the client names the
// UploadId, and a key without s3:AbortMultipartUpload gets 403 the same way) is logged and
// left to the bucket's lifecycle rule: the object is deleted all the same, and the sweep goes
// on to the other records.
TEST_F(media_s3_parts_window, a_refused_abort_neither_keeps_the_object_nor_stops_the_sweep) {
  auto alice = online(io, server.url(), "alice");
  auto s = write_and_seal(dir.path(), "big.bin", 9'000'000, 7);
  auto slot = alice.run(alice.api().request_upload(s.file.size, bytes_of(s.file.sha256)));
  ASSERT_TRUE(slot) << client::describe(slot.error());
  ASSERT_FALSE(slot->multipart_url().empty());
  auto parts = alice.run(alice.api().request_upload_parts(slot->media_id(), "made-up"));
  ASSERT_TRUE(parts) << "any well-formed id is signed: " << client::describe(parts.error());
  ASSERT_TRUE(client::upload(slot->url(), s.cipher, {})) << "the object, in one PUT";
  auto small = write_and_seal(dir.path(), "small.bin", 100'000, 8);
  auto next = alice.run(alice.api().request_upload(small.file.size, bytes_of(small.file.sha256)));
  ASSERT_TRUE(next);
  ASSERT_TRUE(client::upload(next->url(), small.cipher, {}));
  ASSERT_TRUE(stored(slot->media_id()));
  ASSERT_TRUE(stored(next->media_id()));
  // Never sent: after the retention (8 s) both go, the first despite its refused abort.
  EXPECT_TRUE(s3_drops_within_20s(s3_dir.path(), slot->media_id()));
  EXPECT_TRUE(s3_drops_within_20s(s3_dir.path(), next->media_id()));
}

TEST_F(media_s3_multipart, parts_are_signed_for_their_owner_and_assemble_the_file) {
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  auto small = write_and_seal(dir.path(), "small.bin", 8'000'000, 3);
  auto one = alice.run(alice.api().request_upload(small.file.size, bytes_of(small.file.sha256)));
  ASSERT_TRUE(one);
  EXPECT_TRUE(one->multipart_url().empty()) << "one part's worth goes in one PUT";

  auto s = write_and_seal(dir.path(), "video.mp4", 20'000'000 + 5, 4);
  auto slot = alice.run(alice.api().request_upload(s.file.size, bytes_of(s.file.sha256)));
  ASSERT_TRUE(slot);
  ASSERT_FALSE(slot->multipart_url().empty());
  auto upload_id = client::start_multipart(slot->multipart_url());
  ASSERT_TRUE(upload_id) << client::describe(upload_id.error());

  // Only the slot's owner gets part URLs, only for an upload id that can go in a URL.
  EXPECT_EQ(code_of(bob.run(bob.api().request_upload_parts(slot->media_id(), *upload_id))),
            v2::ERROR_CODE_MEDIA_NOT_FOUND);
  EXPECT_EQ(code_of(alice.run(alice.api().request_upload_parts(slot->media_id(), "a b&c"))),
            v2::ERROR_CODE_INVALID_ARGUMENT);
  EXPECT_EQ(code_of(alice.run(alice.api().request_upload_parts(std::string(32, 'f'),
                                                               *upload_id))),
            v2::ERROR_CODE_MEDIA_NOT_FOUND);

  auto parts = alice.run(alice.api().request_upload_parts(slot->media_id(), *upload_id));
  ASSERT_TRUE(parts) << client::describe(parts.error());
  EXPECT_EQ(parts->media_id(), slot->media_id());
  ASSERT_EQ(parts->part_size(), 8u * 1024 * 1024);
  ASSERT_EQ(parts->part_urls_size(), 3) << "20,000,005 bytes and their tags in 8 MiB parts";
  // Parts in any order, each exactly its length; a cut one is sent again alone.
  std::vector<std::string> etags(3);
  for (const int i : {2, 0, 1}) {
    const std::uint64_t first = static_cast<std::uint64_t>(i) * parts->part_size();
    const std::uint64_t last = std::min<std::uint64_t>(s.file.size, first + parts->part_size());
    auto etag = client::upload_part(parts->part_urls(i), s.cipher, first, last);
    ASSERT_TRUE(etag) << "part " << i + 1 << ": " << client::describe(etag.error());
    etags[static_cast<std::size_t>(i)] = *etag;
  }
  EXPECT_FALSE(stored(slot->media_id())) << "nothing is an object before the completion";
  auto done = client::complete_multipart(parts->complete_url(), etags);
  ASSERT_TRUE(done) << client::describe(done.error());
  EXPECT_TRUE(media_flow_files_absent(server.data_dir(), slot->media_id()))
      << "no byte went through parleyd";

  auto sent = alice.run(alice.api().send("bob", "m1", "x", v2::CIPHER_TYPE_SIGNAL_MESSAGE, 0,
                                         slot->media_id()));
  ASSERT_TRUE(sent);
  EXPECT_EQ(code_of(alice.run(alice.api().request_upload_parts(slot->media_id(), *upload_id))),
            v2::ERROR_CODE_INVALID_ARGUMENT)
      << "a sent file's object is what its message names: no new parts";
  auto where = bob.run(bob.api().request_download(sent->chat_id(), sent->seq()));
  ASSERT_TRUE(where);
  auto got = client::download(where->url(), dir.path() / "bob.part", where->size(), {});
  ASSERT_TRUE(got) << client::describe(got.error());
  ASSERT_TRUE(media::decrypt_file(dir.path() / "bob.part", dir.path() / "bob.mp4", s.key,
                                  s.file.size, s.file.sha256));
  EXPECT_TRUE(same_files(dir.path() / "video.mp4", dir.path() / "bob.mp4"));
}

TEST_F(media_s3_multipart, a_cut_upload_resumes_from_the_parts_the_store_kept) {
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  client::local_store local(dir.path() / "alice.db");
  write_file(dir.path() / "talk.mp4", 20'000'000 + 5, 5);
  client::file_to_send file{dir.path() / "talk.mp4", {}, {}, false};
  const std::uint64_t part = 8u * 1024 * 1024;

  // The store dies during the second part: the first part and the upload id are kept.
  std::atomic<std::uint64_t> furthest{0};
  auto cut = alice.run(client::upload_file(
      alice.api(), local, file, dir.path() / "work", [&](std::uint64_t done, std::uint64_t) {
        furthest = std::max<std::uint64_t>(furthest, done);
        if (done >= part) s3.kill_now();  // once the first part is in
      }));
  ASSERT_FALSE(cut) << "the upload cannot finish without the store";
  EXPECT_GE(furthest.load(), part);

  // Back on the same port and data: the next run sends the second and third parts only.
  const auto port = s3.port();
  s3.kill_now();
  s3rver_process again(s3_dir.path(), {}, {}, port);
  std::atomic<std::uint64_t> first_report{UINT64_MAX};
  auto resumed = alice.run(client::upload_file(
      alice.api(), local, file, dir.path() / "work", [&](std::uint64_t done, std::uint64_t) {
        std::uint64_t none = UINT64_MAX;
        first_report.compare_exchange_strong(none, done);
      }));
  ASSERT_TRUE(resumed) << client::describe(resumed.error());
  EXPECT_EQ(first_report.load(), part) << "resumed at the second part, not from byte 0";

  auto sent = alice.run(alice.api().send("bob", "m1", "x", v2::CIPHER_TYPE_SIGNAL_MESSAGE, 0,
                                         resumed->media_id()));
  ASSERT_TRUE(sent);
  client::finish_upload(local, file.path);
  auto where = bob.run(bob.api().request_download(sent->chat_id(), sent->seq()));
  ASSERT_TRUE(where);
  ASSERT_EQ(where->size(), resumed->size());
  auto got = client::download(where->url(), dir.path() / "bob.part", where->size(), {});
  ASSERT_TRUE(got) << client::describe(got.error());
  std::array<std::uint8_t, 32> key{};
  std::array<std::uint8_t, 32> sha{};
  std::memcpy(key.data(), resumed->key().data(), key.size());
  std::memcpy(sha.data(), resumed->sha256().data(), sha.size());
  ASSERT_TRUE(media::decrypt_file(dir.path() / "bob.part", dir.path() / "bob.mp4", key,
                                  resumed->size(), sha));
  EXPECT_TRUE(same_files(dir.path() / "talk.mp4", dir.path() / "bob.mp4"));
}

// The same flow with the object store on https:// (s3rver with a self-signed certificate), as
// S3 is reached in production: the client checks the store's certificate against the CA it is
// given (as --ca does for wss://), and refuses one it cannot verify; parleyd's sweep DELETEs
// over https:// too, trusting [media] s3_ca_file.
// A self-signed certificate, made before the fixture that uses it (a base class first).
struct s3_certificate {
  s3_certificate()
      : made(test_support::make_certificate(certs.path() / "cert.pem", certs.path() / "key.pem",
                                            "parley-s3-test")) {}
  std::string ca() const { return (certs.path() / "cert.pem").string(); }
  test_support::temp_dir certs{"parley_s3_certs_"};
  bool made;
};

class media_s3_tls : protected s3_certificate, public media_s3 {
 protected:
  media_s3_tls() : media_s3(certs.path() / "key.pem", certs.path() / "cert.pem") {}
};

TEST_F(media_s3_tls, files_go_over_https_to_a_store_whose_certificate_is_checked) {
  ASSERT_TRUE(made) << "openssl req failed";
  auto alice = online(io, server.url(), "alice");
  auto bob = online(io, server.url(), "bob");
  auto s = write_and_seal(dir.path(), "doc.pdf", 1'500'000 + 3, 9);
  auto slot = alice.run(alice.api().request_upload(s.file.size, bytes_of(s.file.sha256)));
  ASSERT_TRUE(slot) << client::describe(slot.error());
  ASSERT_EQ(slot->url().rfind("https://localhost:" + std::to_string(s3.port()) + "/parley/", 0),
            0u)
      << slot->url();

  // Without the CA (the system's store only), the self-signed certificate is refused: nothing
  // is sent.
  auto untrusted = client::upload(slot->url(), s.cipher, {});
  ASSERT_FALSE(untrusted);
  EXPECT_EQ(untrusted.error().code, client::transfer_error::errc::connect);
  EXPECT_NE(untrusted.error().message.find("certificate verify failed"), std::string::npos)
      << client::describe(untrusted.error());
  EXPECT_FALSE(stored(slot->media_id())) << "nothing sent";

  auto put = client::upload(slot->url(), s.cipher, {}, ca());
  ASSERT_TRUE(put) << client::describe(put.error());
  auto sent = alice.run(alice.api().send("bob", "m1", "x", v2::CIPHER_TYPE_SIGNAL_MESSAGE, 0,
                                         slot->media_id()));
  ASSERT_TRUE(sent);
  auto where = bob.run(bob.api().request_download(sent->chat_id(), sent->seq()));
  ASSERT_TRUE(where);
  const auto partial = dir.path() / "bob.part";
  auto got = client::download(where->url(), partial, where->size(), {}, ca());
  ASSERT_TRUE(got) << client::describe(got.error());
  // Resumed over TLS too: a Range request continues the partial file.
  fs::resize_file(partial, 700'000);
  auto resumed = client::download(where->url(), partial, where->size(), {}, ca());
  ASSERT_TRUE(resumed) << client::describe(resumed.error());
  ASSERT_TRUE(media::decrypt_file(partial, dir.path() / "bob.pdf", s.key, s.file.size,
                                  s.file.sha256));
  EXPECT_TRUE(same_files(dir.path() / "doc.pdf", dir.path() / "bob.pdf"));

  // An upload never sent: the sweep deletes it over https:// once its retention (3 s) passed;
  // the sent one stays.
  auto orphan = alice.run(alice.api().request_upload(s.file.size, bytes_of(s.file.sha256)));
  ASSERT_TRUE(orphan);
  ASSERT_TRUE(client::upload(orphan->url(), s.cipher, {}, ca()));
  ASSERT_TRUE(stored(orphan->media_id()));
  EXPECT_TRUE(s3_drops_within_20s(s3_dir.path(), orphan->media_id()))
      << "deleted with a signed DELETE over TLS";
  EXPECT_TRUE(stored(slot->media_id())) << "a sent file is referenced: kept";
}

}  // namespace
}  // namespace parley::test
