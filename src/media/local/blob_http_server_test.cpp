// The local blob store end to end: blob_http_server on 127.0.0.1:0 over a temp root, driven by
// the client's upload/download and, for what a well-behaved client never sends, by raw HTTP
// written by hand. Every socket operation here has a 5 s deadline (the client's own are 10 s
// and 30 s), so no test can hang.
#include "media/local/blob_http_server.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client/blob_transfer.hpp"
#include "self_signed_certificate.hpp"
#include "temp_dir.hpp"

namespace parley::media {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// --- helpers ---------------------------------------------------------------------------------

std::string random_bytes(std::size_t n) {
  std::mt19937_64 rng(std::random_device{}());
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &n, EVP_sha256(), nullptr);
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < n; ++i) {
    hex.push_back(digits[md[i] >> 4]);
    hex.push_back(digits[md[i] & 0x0F]);
  }
  return hex;
}

void write_file(const fs::path& p, std::string_view bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Sets the mtime (and atime) of `p` to `ago` before now.
void set_age(const fs::path& p, std::chrono::seconds ago) {
  const auto t =
      std::chrono::duration_cast<std::chrono::seconds>((wall_clock::now() - ago).time_since_epoch())
          .count();
  const timespec times[2] = {{t, 0}, {t, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), times, 0), 0) << p;
}

// `s` with its first `from` replaced by `to` (the test fails if there is none).
std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from << " not in " << s;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

std::string describe(const client::transfer_result<void>& r) {
  return r ? std::string("success") : client::describe(r.error());
}

// A request line and headers (each given one ending in \r\n), ready for a body.
std::string request_text(std::string_view method, std::string_view target,
                         std::string_view headers = {}) {
  return std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
         std::string(headers) + "\r\n";
}

// One TCP connection speaking HTTP by hand; every operation gives up after 5 s.
class raw_client {
 public:
  // To 127.0.0.1:port, from `source` (an address of this machine: 127.0.0.2, say) if given.
  explicit raw_client(unsigned short port, const char* source = nullptr) : stream_(io_) {
    if (source) {
      boost::system::error_code ec;
      stream_.socket().open(tcp::v4(), ec);
      if (!ec) stream_.socket().bind(tcp::endpoint(asio::ip::make_address(source), 0), ec);
      if (ec) return;  // not connected()
    }
    boost::system::error_code result = asio::error::timed_out;
    stream_.expires_after(5s);
    stream_.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                          [&](const boost::system::error_code& ec) { result = ec; });
    run();
    connected_ = !result;
  }
  ~raw_client() { close(); }
  raw_client(const raw_client&) = delete;
  raw_client& operator=(const raw_client&) = delete;

  bool connected() const { return connected_; }

  bool send(std::string_view bytes) {
    boost::system::error_code result = asio::error::timed_out;
    stream_.expires_after(5s);
    asio::async_write(stream_, asio::buffer(bytes.data(), bytes.size()),
                      [&](const boost::system::error_code& ec, std::size_t) { result = ec; });
    run();
    return !result;
  }

  // The next response; nullopt if none came within 5 s (or the connection closed first).
  std::optional<http::response<http::string_body>> read(bool head = false) {
    http::response_parser<http::string_body> parser;
    parser.body_limit(16 * 1024 * 1024);
    if (head) parser.skip(true);
    boost::system::error_code result = asio::error::timed_out;
    stream_.expires_after(5s);
    http::async_read(stream_, buffer_, parser,
                     [&](const boost::system::error_code& ec, std::size_t) { result = ec; });
    run();
    if (result) return std::nullopt;
    return parser.release();
  }

  // True if the server closes the connection within 5 s without sending anything more.
  bool closed_by_server() {
    char byte = 0;
    boost::system::error_code result = asio::error::timed_out;
    stream_.expires_after(5s);
    stream_.async_read_some(asio::buffer(&byte, 1),
                            [&](const boost::system::error_code& ec, std::size_t) { result = ec; });
    run();
    return result == asio::error::eof || result == asio::error::connection_reset;
  }

  void close() {
    boost::system::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

 private:
  void run() {
    io_.restart();
    io_.run();
  }

  asio::io_context io_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  bool connected_ = false;
};

// One request on a fresh connection.
std::optional<http::response<http::string_body>> one_request(unsigned short port,
                                                             const std::string& text,
                                                             bool head = false) {
  raw_client c(port);
  if (!c.connected() || !c.send(text)) return std::nullopt;
  return c.read(head);
}

std::optional<std::uint64_t> offset_of(const http::response<http::string_body>& res) {
  const auto it = res.find("Parley-Upload-Offset");
  if (it == res.end()) return std::nullopt;
  return std::stoull(std::string(it->value()));
}

// A store and its server on 127.0.0.1:0 over a fresh temp root, as parleyd assembles them: the
// store learns its public URL once the server has bound.
struct harness {
  explicit harness(std::size_t max_connections = 256)
      : harness(blob_http_server::options{.max_connections = max_connections}) {}
  explicit harness(blob_http_server::options o) {
    store = std::make_unique<local_blob_store>(root);
    server = std::make_unique<blob_http_server>(*store, o);
    const auto bound = server->start(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = bound.port();
    EXPECT_EQ(server->local_endpoint(), bound);
    base = "http://127.0.0.1:" + std::to_string(port);
    store->set_public_url(base + "/");
  }

  upload_grant grant_for(const std::string& content, wall_clock::duration valid_for = 10min) {
    upload_grant g;
    g.id = new_blob_id();
    g.owner = 7;
    g.size = content.size();
    g.sha256_hex = sha256_hex(content);
    g.expires = wall_clock::now() + valid_for;
    return g;
  }
  std::string put_url(const upload_grant& g) { return store->upload_url(g); }
  std::string get_url(const blob_id& id, wall_clock::duration valid_for = 10min) {
    return store->download_url(id, 9, wall_clock::now() + valid_for);
  }
  // The request target of one of our URLs.
  std::string target(const std::string& url) const { return url.substr(base.size()); }
  local_blob_store::blob_files files(const blob_id& id) const { return *store->files_of(id); }
  fs::path file(const std::string& name, std::string_view content) const {
    const fs::path p = dir.path() / name;
    write_file(p, content);
    return p;
  }

  // Uploads `content` with the client; the grant it was stored under.
  upload_grant stored(const std::string& content) {
    const auto g = grant_for(content);
    const auto r = client::upload(put_url(g), file("upload-" + g.id, content));
    EXPECT_TRUE(r) << describe(r);
    return g;
  }

  // A PUT of all of `content` to `put_target`, of which only the first `sent` bytes of the body
  // have gone out, on a connection of its own: destroying it cuts the body there. Null if
  // that could not be done.
  std::unique_ptr<raw_client> put_begun(const std::string& put_target, const std::string& content,
                                        std::uint64_t sent) const {
    auto c = std::make_unique<raw_client>(port);
    if (!c->connected() ||
        !c->send(request_text("PUT", put_target,
                              "Content-Length: " + std::to_string(content.size()) + "\r\n") +
                 content.substr(0, sent)))
      return nullptr;
    return c;
  }

  // Polls HEAD until it reports `want` bytes stored (at most 5 s); the last offset seen.
  std::uint64_t wait_for_offset(const std::string& put_target, std::uint64_t want) const {
    std::uint64_t seen = 0;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      const auto res = one_request(port, request_text("HEAD", put_target), true);
      if (res && res->result() == http::status::ok && offset_of(*res)) seen = *offset_of(*res);
      if (seen == want) break;
      std::this_thread::sleep_for(5ms);
    }
    return seen;
  }

  test_support::temp_dir dir{"blob_http_server_"};
  fs::path root = dir.path() / "media";
  std::unique_ptr<local_blob_store> store;
  std::unique_ptr<blob_http_server> server;
  unsigned short port = 0;
  std::string base;
};

using progress_log = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

client::progress_fn recorder(progress_log& log) {
  return [&log](std::uint64_t done, std::uint64_t total) { log.emplace_back(done, total); };
}

// --- transfers -------------------------------------------------------------------------------

TEST(blob_http_server, an_uploaded_file_downloads_byte_identical) {
  harness h;
  const std::string content = random_bytes(3 * 1024 * 1024 + 12345);
  const auto g = h.grant_for(content);
  progress_log up_log;
  const auto up = client::upload(h.put_url(g), h.file("source", content), recorder(up_log));
  ASSERT_TRUE(up) << describe(up);
  ASSERT_FALSE(up_log.empty());
  EXPECT_EQ(up_log.back(), std::make_pair(g.size, g.size));
  const auto files = h.files(g.id);
  EXPECT_TRUE(fs::exists(files.complete));
  EXPECT_FALSE(fs::exists(files.partial));
  EXPECT_EQ(sha256_hex(read_file(files.complete)), g.sha256_hex);

  progress_log down_log;
  const fs::path out = h.dir.path() / "downloaded";
  const auto down = client::download(h.get_url(g.id), out, g.size, recorder(down_log));
  ASSERT_TRUE(down) << describe(down);
  const std::string got = read_file(out);
  EXPECT_EQ(got.size(), content.size());
  EXPECT_TRUE(got == content) << "the downloaded bytes differ";
  ASSERT_FALSE(down_log.empty());
  EXPECT_EQ(down_log.back(), std::make_pair(g.size, g.size));
}

TEST(blob_http_server, range_requests_get_206_with_exactly_those_bytes) {
  harness h;
  const std::string content = random_bytes(300 * 1024 + 7);
  const auto g = h.stored(content);
  const std::string target = h.target(h.get_url(g.id));
  const std::string size = std::to_string(content.size());

  auto res = one_request(h.port, request_text("GET", target, "Range: bytes=1000-1999\r\n"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::partial_content);
  EXPECT_EQ((*res)[http::field::content_range], "bytes 1000-1999/" + size);
  EXPECT_EQ((*res)[http::field::content_type], "application/octet-stream");
  EXPECT_TRUE(res->body() == content.substr(1000, 1000));

  res = one_request(h.port, request_text("GET", target, "Range: bytes=290000-\r\n"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::partial_content);
  EXPECT_EQ((*res)[http::field::content_range],
            "bytes 290000-" + std::to_string(content.size() - 1) + "/" + size);
  EXPECT_TRUE(res->body() == content.substr(290000));

  res = one_request(h.port, request_text("GET", target, "Range: bytes=-100\r\n"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::partial_content);
  EXPECT_TRUE(res->body() == content.substr(content.size() - 100));

  res = one_request(h.port, request_text("GET", target));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::ok);
  EXPECT_EQ((*res)[http::field::accept_ranges], "bytes");
  EXPECT_TRUE(res->body() == content);

  res = one_request(h.port, request_text("GET", target, "Range: bytes=" + size + "-\r\n"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::range_not_satisfiable);
  EXPECT_EQ((*res)[http::field::content_range], "bytes */" + size);
}

TEST(blob_http_server, an_upload_cut_in_the_middle_resumes_from_the_stored_offset) {
  harness h;
  const std::string content = random_bytes(3 * 1024 * 1024 + 5);
  const auto g = h.grant_for(content);
  const std::string url = h.put_url(g);
  const std::string target = h.target(url);
  const std::uint64_t half = content.size() / 2;
  ASSERT_TRUE(h.put_begun(target, content, half));  // cut there, half-way through the body
  ASSERT_EQ(h.wait_for_offset(target, half), half) << "HEAD never showed the first half stored";
  EXPECT_TRUE(fs::exists(h.files(g.id).partial));

  // A continuation from anywhere but the stored offset is refused with that offset.
  const std::uint64_t wrong = 10;
  auto res = one_request(
      h.port, request_text("PUT", target,
                           "Content-Range: bytes " + std::to_string(wrong) + "-" +
                               std::to_string(content.size() - 1) + "/" +
                               std::to_string(content.size()) + "\r\n" + "Content-Length: " +
                               std::to_string(content.size() - wrong) + "\r\n"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::conflict);
  EXPECT_EQ(offset_of(*res), half);

  progress_log log;
  const auto up = client::upload(url, h.file("source", content), recorder(log));
  ASSERT_TRUE(up) << describe(up);
  ASSERT_FALSE(log.empty());
  EXPECT_GE(log.front().first, half) << "the client sent the first half again";
  const auto files = h.files(g.id);
  EXPECT_FALSE(fs::exists(files.partial));
  EXPECT_EQ(sha256_hex(read_file(files.complete)), g.sha256_hex);
  EXPECT_EQ(h.wait_for_offset(target, content.size()), content.size());
}

// What a PUT that failed at its fsync or rename leaves, or a parleyd stopped between an
// upload's last write and its rename: a .part of the full size. HEAD reports `size` only for a
// complete blob (a client takes `size` as "done" and sends the message), so it checks such a
// .part against the signed hash and completes it, or deletes it when it does not match.
TEST(blob_http_server, a_part_of_the_full_size_left_behind_is_completed_or_deleted_by_head) {
  harness h;
  // Over 4 MiB: the re-hash lets other connections run in between (rehash_pieces_per_turn).
  const std::string content = random_bytes(5 * 1024 * 1024 + 3);
  const auto g = h.grant_for(content);
  const auto files = h.files(g.id);
  fs::create_directories(files.dir);
  write_file(files.partial, content);
  const std::string target = h.target(h.put_url(g));
  auto res = one_request(h.port, request_text("HEAD", target), true);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::ok);
  EXPECT_EQ(offset_of(*res), g.size);
  EXPECT_FALSE(fs::exists(files.partial));
  EXPECT_TRUE(read_file(files.complete) == content);
  const fs::path out = h.dir.path() / "out";
  const auto down = client::download(h.get_url(g.id), out, g.size);
  ASSERT_TRUE(down) << describe(down);
  EXPECT_TRUE(read_file(out) == content);

  // The same size with one byte changed: not the signed blob, so it goes, and HEAD says 0.
  std::string wrong = content;
  wrong[1234] = static_cast<char>(wrong[1234] ^ 1);
  const auto g2 = h.grant_for(content);
  const auto files2 = h.files(g2.id);
  fs::create_directories(files2.dir);
  write_file(files2.partial, wrong);
  res = one_request(h.port, request_text("HEAD", h.target(h.put_url(g2))), true);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::ok);
  EXPECT_EQ(offset_of(*res), 0u);
  EXPECT_FALSE(fs::exists(files2.partial));
  EXPECT_FALSE(fs::exists(files2.complete));
}

// A PUT meets such a .part the same way: one that matches answers "already complete".
TEST(blob_http_server, a_put_completes_a_full_part_left_behind_and_answers_already_complete) {
  harness h;
  const std::string content = random_bytes(300000);
  const auto g = h.grant_for(content);
  const auto files = h.files(g.id);
  fs::create_directories(files.dir);
  write_file(files.partial, content);
  const std::string range = "Content-Range: bytes 10-" + std::to_string(g.size - 1) + "/" +
                            std::to_string(g.size) +
                            "\r\nContent-Length: " + std::to_string(g.size - 10) + "\r\n";
  const auto res = one_request(h.port, request_text("PUT", h.target(h.put_url(g)), range));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::conflict);
  EXPECT_EQ(res->body(), "already complete\n");
  EXPECT_EQ(offset_of(*res), g.size);
  EXPECT_FALSE(fs::exists(files.partial));
  EXPECT_TRUE(read_file(files.complete) == content);
}

// LAST must be below TOTAL: "bytes 0-18446744073709551615/SIZE" would make LAST - FIRST + 1
// wrap round to 0 and pass for a Content-Length of 0, and start the upload over.
TEST(blob_http_server, a_content_range_past_its_total_is_malformed_and_changes_nothing) {
  harness h;
  const std::string content = random_bytes(1024 * 1024);
  const auto g = h.grant_for(content);
  const std::string target = h.target(h.put_url(g));
  const std::uint64_t half = content.size() / 2;
  ASSERT_TRUE(h.put_begun(target, content, half));  // cut half-way
  ASSERT_EQ(h.wait_for_offset(target, half), half);
  for (const std::string& range : {"bytes 0-18446744073709551615/" + std::to_string(g.size),
                                   "bytes " + std::to_string(half) + "-" + std::to_string(g.size) +
                                       "/" + std::to_string(g.size)}) {
    const auto res = one_request(
        h.port,
        request_text("PUT", target, "Content-Range: " + range + "\r\nContent-Length: 0\r\n"));
    ASSERT_TRUE(res) << range;
    EXPECT_EQ(res->result(), http::status::bad_request) << range;
    EXPECT_EQ(res->body(), "malformed Content-Range (bytes FIRST-LAST/TOTAL)\n") << range;
  }
  EXPECT_EQ(h.wait_for_offset(target, half), half) << "a refused PUT changed the stored bytes";
}

// A newer PUT takes a blob over from an older one only once it is accepted: a continuation
// refused for its offset leaves the upload that is still writing alone.
TEST(blob_http_server, a_refused_put_does_not_stop_the_upload_that_is_running) {
  harness h;
  const std::string content = random_bytes(1024 * 1024);
  const auto g = h.grant_for(content);
  const std::string target = h.target(h.put_url(g));
  const std::uint64_t half = content.size() / 2;  // two whole 256-KiB pieces: written at once
  const auto up = h.put_begun(target, content, half);
  ASSERT_TRUE(up);
  ASSERT_EQ(h.wait_for_offset(target, half), half);

  const std::uint64_t wrong = 10;
  const auto res = one_request(
      h.port, request_text("PUT", target,
                           "Content-Range: bytes " + std::to_string(wrong) + "-" +
                               std::to_string(g.size - 1) + "/" + std::to_string(g.size) +
                               "\r\nContent-Length: " + std::to_string(g.size - wrong) + "\r\n"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::conflict);
  EXPECT_EQ(res->body(), "offset mismatch\n");
  EXPECT_EQ(offset_of(*res), half);

  ASSERT_TRUE(up->send(content.substr(half)));
  const auto done = up->read();
  ASSERT_TRUE(done);
  EXPECT_EQ(done->result(), http::status::created) << done->body();
  EXPECT_TRUE(read_file(h.files(g.id).complete) == content);
}

TEST(blob_http_server, a_download_resumes_by_appending_to_the_partial_file) {
  harness h;
  const std::string content = random_bytes(1024 * 1024 + 3);
  const auto g = h.stored(content);
  // The first K bytes are marked: a resumed download keeps them, a restarted one would not.
  const std::size_t k = 300000;
  const fs::path partial = h.file("partial", std::string(k, 'x'));
  progress_log log;
  const auto down = client::download(h.get_url(g.id), partial, g.size, recorder(log));
  ASSERT_TRUE(down) << describe(down);
  const std::string got = read_file(partial);
  EXPECT_EQ(got.size(), content.size());
  EXPECT_TRUE(got == std::string(k, 'x') + content.substr(k)) << "not appended after the first K";
  ASSERT_FALSE(log.empty());
  EXPECT_GE(log.front().first, k);

  // A file longer than the blob cannot be a prefix of it: the download starts over.
  write_file(partial, content + "trailing");
  const auto again = client::download(h.get_url(g.id), partial, g.size);
  ASSERT_TRUE(again) << describe(again);
  EXPECT_TRUE(read_file(partial) == content);
}

// --- refusals --------------------------------------------------------------------------------

TEST(blob_http_server, expired_urls_are_refused_with_403) {
  harness h;
  const std::string content = random_bytes(10000);
  const auto g = h.grant_for(content, -1min);
  const auto up = client::upload(h.put_url(g), h.file("source", content));
  ASSERT_FALSE(up);
  EXPECT_EQ(up.error().code, client::transfer_error::errc::http_status);
  EXPECT_EQ(up.error().status, 403u);
  EXPECT_EQ(up.error().message, "expired");
  EXPECT_FALSE(fs::exists(h.files(g.id).partial));

  const auto stored = h.stored(content);
  const auto down = client::download(h.get_url(stored.id, -1min), h.dir.path() / "out", 10000);
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().status, 403u);
  EXPECT_EQ(down.error().message, "expired");
}

TEST(blob_http_server, a_tampered_signature_is_refused_with_403) {
  harness h;
  const std::string content = random_bytes(10000);
  const auto g = h.grant_for(content);
  std::string url = h.put_url(g);
  url.back() = url.back() == '0' ? '1' : '0';
  const auto up = client::upload(url, h.file("source", content));
  ASSERT_FALSE(up);
  EXPECT_EQ(up.error().status, 403u);
  EXPECT_EQ(up.error().message, "bad signature");

  const auto stored = h.stored(content);
  std::string get = h.get_url(stored.id);
  get.back() = get.back() == '0' ? '1' : '0';
  const auto res = one_request(h.port, request_text("GET", h.target(get)));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::forbidden);
  EXPECT_EQ(res->body(), "bad signature\n");
}

TEST(blob_http_server, the_url_of_one_blob_does_not_work_for_another) {
  harness h;
  const std::string content = random_bytes(10000);
  const auto a = h.grant_for(content);
  const blob_id b = new_blob_id();
  const std::string url = replaced(h.put_url(a), "/v1/blobs/" + a.id, "/v1/blobs/" + b);
  const auto up = client::upload(url, h.file("source", content));
  ASSERT_FALSE(up);
  EXPECT_EQ(up.error().status, 403u);
  EXPECT_EQ(up.error().message, "bad signature");
  EXPECT_FALSE(fs::exists(h.files(b).partial));
  EXPECT_FALSE(fs::exists(h.files(b).complete));

  // Nor does a download URL of A on B's path, nor a download URL to upload.
  const auto stored = h.stored(content);
  const std::string get =
      replaced(h.get_url(stored.id), "/v1/blobs/" + stored.id, "/v1/blobs/" + b);
  auto res = one_request(h.port, request_text("GET", h.target(get)));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::forbidden);
  res = one_request(
      h.port, request_text("PUT", h.target(h.get_url(stored.id)), "Content-Length: 1\r\n") + "x");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::forbidden);
  EXPECT_EQ(res->body(), "wrong operation\n");
}

TEST(blob_http_server, changing_owner_size_or_hash_in_the_query_is_refused_with_403) {
  harness h;
  const std::string content = random_bytes(10000);
  const auto g = h.grant_for(content);
  const std::string url = h.put_url(g);
  const std::string size = std::to_string(g.size);
  const std::string other_hash = sha256_hex("something else");
  for (const std::string& changed :
       {replaced(url, "owner=7&", "owner=8&"), replaced(url, "size=" + size, "size=" + size + "0"),
        replaced(url, "sha256=" + g.sha256_hex, "sha256=" + other_hash)}) {
    const auto res =
        one_request(h.port, request_text("PUT", h.target(changed), "Content-Length: 0\r\n"));
    ASSERT_TRUE(res) << changed;
    EXPECT_EQ(res->result(), http::status::forbidden) << changed;
    EXPECT_EQ(res->body(), "bad signature\n") << changed;
  }
  EXPECT_FALSE(fs::exists(h.files(g.id).partial));
}

TEST(blob_http_server, a_body_past_the_signed_size_gets_413_and_no_part_is_left) {
  harness h;
  const std::string content = random_bytes(100000);
  const auto g = h.grant_for(content);
  const std::string target = h.target(h.put_url(g));
  // A first half is stored (204, with the offset)...
  auto res = one_request(
      h.port, request_text("PUT", target, "Content-Length: 50000\r\n") + content.substr(0, 50000));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::no_content);
  EXPECT_EQ(offset_of(*res), 50000u);
  ASSERT_TRUE(fs::exists(h.files(g.id).partial));
  // ...and a PUT declaring one byte more than signed is refused before its body is read.
  raw_client c(h.port);
  ASSERT_TRUE(c.send(
      request_text("PUT", target, "Content-Length: " + std::to_string(g.size + 1) + "\r\n")));
  res = c.read();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::payload_too_large);
  EXPECT_FALSE(res->keep_alive());
  EXPECT_FALSE(fs::exists(h.files(g.id).partial));
  EXPECT_FALSE(fs::exists(h.files(g.id).complete));
}

TEST(blob_http_server, a_wrong_hash_gets_400_and_nothing_is_kept) {
  harness h;
  const std::string content = random_bytes(700 * 1024);
  auto g = h.grant_for(content);
  g.sha256_hex = sha256_hex("not this content");
  const auto up = client::upload(h.put_url(g), h.file("source", content));
  ASSERT_FALSE(up);
  EXPECT_EQ(up.error().code, client::transfer_error::errc::http_status);
  EXPECT_EQ(up.error().status, 400u);
  EXPECT_EQ(up.error().message, "hash mismatch");
  EXPECT_FALSE(fs::exists(h.files(g.id).partial));
  EXPECT_FALSE(fs::exists(h.files(g.id).complete));
}

TEST(blob_http_server, a_second_put_of_a_complete_blob_gets_409_and_changes_nothing) {
  harness h;
  const std::string content = random_bytes(50000);
  const auto g = h.stored(content);
  const auto files = h.files(g.id);
  set_age(files.complete, 1h);
  const auto before = fs::last_write_time(files.complete);

  const std::string target = h.target(h.put_url(g));
  auto res = one_request(
      h.port, request_text("PUT", target, "Content-Length: " + std::to_string(g.size) + "\r\n"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::conflict);
  EXPECT_EQ(offset_of(*res), g.size);
  EXPECT_EQ(fs::last_write_time(files.complete), before);
  EXPECT_TRUE(read_file(files.complete) == content);
  EXPECT_FALSE(fs::exists(files.partial));

  // The client sees it complete (HEAD) and sends nothing.
  progress_log log;
  const auto up = client::upload(h.put_url(g), h.file("again", content), recorder(log));
  ASSERT_TRUE(up) << describe(up);
  EXPECT_EQ(log, progress_log({{g.size, g.size}}));
  EXPECT_EQ(fs::last_write_time(files.complete), before);
}

TEST(blob_http_server, a_missing_blob_gets_404) {
  harness h;
  const blob_id id = new_blob_id();
  const fs::path out = h.dir.path() / "out";
  const auto down = client::download(h.get_url(id), out, 1000);
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().code, client::transfer_error::errc::http_status);
  EXPECT_EQ(down.error().status, 404u);
  EXPECT_FALSE(fs::exists(out));
}

TEST(blob_http_server, malformed_requests_get_4xx_and_other_paths_404) {
  harness h;
  const std::string content = random_bytes(1000);
  const auto g = h.grant_for(content);
  const std::string target = h.target(h.put_url(g));

  auto res = one_request(h.port, request_text("PUT", target, "Transfer-Encoding: chunked\r\n") +
                                     "3e8\r\n" + content + "\r\n0\r\n\r\n");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::length_required);
  EXPECT_FALSE(res->keep_alive());

  res = one_request(h.port, request_text("PUT", target));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::length_required);

  res = one_request(
      h.port,
      request_text("PUT", target, "Content-Range: bytes 0-9/5000\r\nContent-Length: 10\r\n") +
          content.substr(0, 10));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::bad_request);

  res = one_request(h.port, request_text("GET", "/v1/blobs/" + g.id + "?op=get&user=9"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::bad_request);
  EXPECT_EQ(res->body(), "malformed URL\n");

  res = one_request(h.port, request_text("POST", target, "Content-Length: 0\r\n"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::method_not_allowed);
  EXPECT_EQ((*res)[http::field::allow], "GET, HEAD, PUT");

  for (const std::string& elsewhere :
       {std::string("/"), std::string("/v1/blobs/"), "/v1/blobs/" + g.id.substr(1) + "?op=get",
        std::string("/v1/blobs/../url.key"), "/v2/blobs/" + g.id}) {
    res = one_request(h.port, request_text("GET", elsewhere));
    ASSERT_TRUE(res) << elsewhere;
    EXPECT_EQ(res->result(), http::status::not_found) << elsewhere;
  }

  res = one_request(
      h.port, request_text("GET", target, "X-Padding: " + std::string(9 * 1024, 'a') + "\r\n"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::request_header_fields_too_large);
}

// https:// is spoken (media_test.cpp has it against an object store with a certificate); to a
// server that speaks plain HTTP it fails in the handshake, as a connect error, and sends
// nothing. Other schemes are not URLs of a blob store.
TEST(blob_http_server, the_client_speaks_tls_for_https_and_refuses_other_schemes) {
  harness h;
  const auto g = h.grant_for("never sent");
  auto url = h.put_url(g);
  ASSERT_EQ(url.rfind("http://", 0), 0u);
  url.insert(4, "s");
  const auto up = client::upload(url, h.file("tls", "never sent"));
  ASSERT_FALSE(up);
  EXPECT_EQ(up.error().code, client::transfer_error::errc::connect) << client::describe(up.error());
  EXPECT_FALSE(fs::exists(h.files(g.id).partial)) << "no byte of the body reached the store";
  const auto down = client::download("ftp://127.0.0.1/v1/blobs/x", "/nonexistent", 1);
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().code, client::transfer_error::errc::bad_url);
}

// With a certificate (set_tls), the same server speaks HTTPS: uploads, downloads and their
// resumption as over plain HTTP, the certificate checked by the client; set_tls(nullptr) makes
// new connections plain again.
TEST(blob_http_server, with_a_certificate_files_go_over_https) {
  harness h;
  const auto cert = h.dir.path() / "cert.pem";
  const auto key = h.dir.path() / "key.pem";
  ASSERT_TRUE(test_support::make_certificate(cert, key, "blob-test"));
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  context->use_certificate_chain_file(cert.string());
  context->use_private_key_file(key.string(), asio::ssl::context::pem);
  h.server->set_tls(context);
  h.store->set_public_url("https://127.0.0.1:" + std::to_string(h.port));

  const std::string content = random_bytes(700 * 1024 + 3);
  const auto g = h.grant_for(content);
  const auto source = h.file("tls-source", content);
  const auto untrusted = client::upload(h.put_url(g), source);
  ASSERT_FALSE(untrusted);
  EXPECT_NE(untrusted.error().message.find("certificate verify failed"), std::string::npos)
      << client::describe(untrusted.error());
  const auto up = client::upload(h.put_url(g), source, {}, cert.string());
  ASSERT_TRUE(up) << describe(up);
  EXPECT_EQ(sha256_hex(read_file(h.files(g.id).complete)), g.sha256_hex);
  // Plain HTTP to the TLS port: the handshake fails, nothing is answered.
  const auto plain = one_request(h.port, request_text("HEAD", h.target(h.put_url(g))), true);
  EXPECT_FALSE(plain && plain->result() == http::status::ok);

  const fs::path out = h.dir.path() / "tls-downloaded";
  ASSERT_TRUE(client::download(h.get_url(g.id), out, g.size, {}, cert.string()));
  fs::resize_file(out, 100'000);
  const auto resumed = client::download(h.get_url(g.id), out, g.size, {}, cert.string());
  ASSERT_TRUE(resumed) << describe(resumed);
  EXPECT_TRUE(read_file(out) == content) << "the downloaded bytes differ";

  h.server->set_tls(nullptr);
  h.store->set_public_url(h.base);
  const fs::path again = h.dir.path() / "plain-downloaded";
  const auto down = client::download(h.get_url(g.id), again, g.size);
  ASSERT_TRUE(down) << describe(down);
  EXPECT_TRUE(read_file(again) == content);
}

// --- the store -------------------------------------------------------------------------------

TEST(blob_http_server, remove_deletes_the_blob_and_its_partial_upload) {
  harness h;
  const std::string content = random_bytes(20000);
  const auto g = h.stored(content);
  const auto files = h.files(g.id);
  write_file(files.partial, "left over");
  ASSERT_TRUE(fs::exists(files.complete));
  ASSERT_TRUE(fs::exists(files.partial));
  EXPECT_TRUE(h.store->remove(g.id, {}));
  EXPECT_FALSE(fs::exists(files.complete));
  EXPECT_FALSE(fs::exists(files.partial));
  EXPECT_TRUE(h.store->remove(g.id, {})) << "a blob that is not there is not an error";
  const auto res = one_request(h.port, request_text("GET", h.target(h.get_url(g.id))));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::not_found);
}

TEST(blob_http_server, written_before_lists_old_files_only) {
  harness h;
  const std::string content = random_bytes(40000);
  // An old partial upload, a fresh one, and an old complete blob.
  const auto old_part = h.grant_for(content);
  auto res = one_request(
      h.port, request_text("PUT", h.target(h.put_url(old_part)), "Content-Length: 100\r\n") +
                  content.substr(0, 100));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->result(), http::status::no_content);
  set_age(h.files(old_part.id).partial, 2h);
  const auto fresh_part = h.grant_for(content);
  res = one_request(
      h.port, request_text("PUT", h.target(h.put_url(fresh_part)), "Content-Length: 100\r\n") +
                  content.substr(0, 100));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->result(), http::status::no_content);
  const auto old_blob = h.stored(content);
  set_age(h.files(old_blob.id).complete, 3h);
  // Files that are no blob's are ignored, however old.
  const fs::path junk = h.files(old_part.id).dir / "not-a-blob";
  write_file(junk, "x");
  set_age(junk, 5h);

  const auto ids = h.store->written_before(wall_clock::now() - 1h);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), old_part.id), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), old_blob.id), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), fresh_part.id), 0);
  EXPECT_EQ(ids.size(), 2u);
}

TEST(blob_http_server, the_url_key_is_made_once_kept_private_and_checked) {
  test_support::temp_dir dir("blob_http_server_key_");
  const fs::path root = dir.path() / "media";
  const std::string content = "abc";
  upload_grant g;
  g.id = new_blob_id();
  g.owner = 1;
  g.size = content.size();
  g.sha256_hex = sha256_hex(content);
  g.expires = wall_clock::now() + 1min;
  std::string url;
  {
    local_blob_store first(root, "http://127.0.0.1:1/");
    url = first.upload_url(g);
    EXPECT_TRUE(url.starts_with("http://127.0.0.1:1/v1/blobs/" + g.id + "?op=put&")) << url;
  }
  struct stat st {};
  ASSERT_EQ(::stat((root / "url.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 32);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(root.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  // A second start reads the same key: the URL still verifies.
  local_blob_store second(root, "http://127.0.0.1:1");
  const auto target =
      split_blob_target(std::string_view(url).substr(std::strlen("http://127.0.0.1:1")));
  ASSERT_TRUE(target);
  const auto verdict = second.signer().verify_upload(target->id, target->query, wall_clock::now());
  ASSERT_TRUE(verdict);
  EXPECT_EQ(verdict->size, content.size());
  EXPECT_EQ(verdict->owner, 1u);

  // A key of the wrong size is never replaced: the store refuses to start.
  const fs::path damaged = dir.path() / "damaged";
  fs::create_directories(damaged);
  write_file(damaged / "url.key", std::string(31, 'k'));
  EXPECT_THROW(local_blob_store(damaged, "http://127.0.0.1:1"), std::runtime_error);
  EXPECT_EQ(fs::file_size(damaged / "url.key"), 31u);
}

// --- connections -----------------------------------------------------------------------------

// One source address gets at most max_per_source of the connections: past it, 503, while
// another address is served; a slot comes back when a connection closes; an unlimited block
// is not counted.
TEST(blob_http_server, one_address_gets_only_its_share_of_the_connections) {
  harness h(blob_http_server::options{.max_connections = 8, .max_per_source = 2});
  const auto g = h.grant_for("x");
  const std::string head = request_text("HEAD", h.target(h.put_url(g)));
  const auto served = [&](raw_client& c) {
    if (!c.connected() || !c.send(head)) return false;
    const auto res = c.read(true);
    return res && res->result() == http::status::ok;
  };
  raw_client a(h.port);
  raw_client b(h.port);
  ASSERT_TRUE(served(a));
  ASSERT_TRUE(served(b));
  {
    raw_client third(h.port);
    ASSERT_TRUE(third.connected());
    const auto res = third.read();
    ASSERT_TRUE(res) << "no answer to the third connection from 127.0.0.1";
    EXPECT_EQ(res->result(), http::status::service_unavailable);
    EXPECT_TRUE(third.closed_by_server());
  }
  raw_client other(h.port, "127.0.0.2");
  ASSERT_TRUE(other.connected()) << "cannot connect from 127.0.0.2";
  EXPECT_TRUE(served(other)) << "another address is served";

  b.close();
  bool again = false;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!again && std::chrono::steady_clock::now() < deadline) {
    raw_client next(h.port);
    again = served(next);
    if (!again) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(again) << "the closed connection's slot came back";

  harness open(
      blob_http_server::options{.max_connections = 8,
                                .max_per_source = 2,
                                .unlimited_sources = {parse_address_block("127.0.0.0/8")}});
  const std::string open_head =
      request_text("HEAD", open.target(open.put_url(open.grant_for("y"))));
  std::vector<std::unique_ptr<raw_client>> many;
  for (int i = 0; i < 4; ++i) {
    many.push_back(std::make_unique<raw_client>(open.port));
    ASSERT_TRUE(many.back()->send(open_head));
    const auto res = many.back()->read(true);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result(), http::status::ok) << i << ": an unlimited block is not counted";
  }
}

TEST(blob_http_server, connections_over_the_limit_get_503) {
  harness h(2);
  const auto g = h.grant_for("x");
  const std::string head = request_text("HEAD", h.target(h.put_url(g)));
  raw_client a(h.port);
  raw_client b(h.port);
  for (auto* c : {&a, &b}) {
    ASSERT_TRUE(c->send(head));
    const auto res = c->read(true);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result(), http::status::ok);
  }
  {
    raw_client third(h.port);
    ASSERT_TRUE(third.connected());
    const auto res = third.read();
    ASSERT_TRUE(res) << "no answer to the connection over the limit";
    EXPECT_EQ(res->result(), http::status::service_unavailable);
    EXPECT_TRUE(third.closed_by_server());
  }
  // The two keep their connections: still served.
  ASSERT_TRUE(a.send(head));
  const auto again = a.read(true);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->result(), http::status::ok);

  // Once one closes, a new connection is served again.
  b.close();
  bool served = false;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!served && std::chrono::steady_clock::now() < deadline) {
    const auto res = one_request(h.port, head, true);
    served = res && res->result() == http::status::ok;
    if (!served) std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(served);
}

// Every read must make progress within io_timeout (30 s by default; 1 s here): a silent
// connection, a header that stops half-way and a body that stalls are closed, and a stalled
// upload keeps what arrived for a resume.
TEST(blob_http_server, connections_that_make_no_progress_are_closed) {
  harness h(blob_http_server::options{.io_timeout = std::chrono::seconds(1)});
  raw_client silent(h.port);
  ASSERT_TRUE(silent.connected());
  raw_client half_header(h.port);
  ASSERT_TRUE(half_header.send("HEAD /v1/blobs/"));
  const std::string content = random_bytes(1000);
  const auto g = h.grant_for(content);
  const std::string target = h.target(h.put_url(g));
  raw_client stalled(h.port);
  ASSERT_TRUE(stalled.send(request_text("PUT", target, "Content-Length: 1000\r\n") +
                           content.substr(0, 300)));
  // closed_by_server() waits 5 s at most: far less than the default 30 s.
  EXPECT_TRUE(silent.closed_by_server()) << "a connection that never sent a byte";
  EXPECT_TRUE(half_header.closed_by_server()) << "a header that stopped half-way";
  EXPECT_TRUE(stalled.closed_by_server()) << "a body that stalled";
  EXPECT_EQ(h.wait_for_offset(target, 300), 300u) << "the stalled upload's bytes are kept";
}

TEST(blob_http_server, stop_closes_open_connections_and_returns_promptly) {
  harness h;
  raw_client idle(h.port);
  ASSERT_TRUE(idle.connected());
  const auto g = h.grant_for("x");
  ASSERT_TRUE(idle.send(request_text("HEAD", h.target(h.put_url(g)))));
  ASSERT_TRUE(idle.read(true));
  const auto started = std::chrono::steady_clock::now();
  h.server->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1500ms)
      << "stop() waited for its deadline: the idle connection was not closed";
  EXPECT_TRUE(idle.closed_by_server());
  h.server->stop();  // idempotent
}

}  // namespace
}  // namespace parley::media
