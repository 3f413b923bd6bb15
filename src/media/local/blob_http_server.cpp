#include "media/local/blob_http_server.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "common/log.hpp"
#include "common/plain_or_tls.hpp"
#include "common/posix_file.hpp"
#include "common/thread_name.hpp"

namespace parley::media {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using tcp = asio::ip::tcp;

struct blob_http_server::state {
  state(asio::io_context& io, local_blob_store& s, const options& o)
      : acceptor(io), store(s), opts(o), sources(o.max_per_source, o.unlimited_sources) {}

  tcp::acceptor acceptor;
  local_blob_store& store;
  const options opts;
  bool stopping = false;
  std::size_t open = 0;  // connections being served (connection_ticket)
  source_limit sources;  // of those, per source address (connection_ticket)
  std::uint64_t next_number = 1;
  // Every connection's stream (its TCP layer), so that stop() can close them.
  std::unordered_map<std::uint64_t, beast::tcp_stream*> streams;
  // Set: new connections speak TLS with it (set_tls(), from any thread, hence the lock).
  std::mutex tls_mutex;
  std::shared_ptr<asio::ssl::context> tls;
  // Blob id -> the number of the one upload that may write its .part (upload_claim).
  std::unordered_map<std::string, std::uint64_t> writers;
};

namespace {

using posix::fd_guard;
using posix::pread_all;
using posix::pwrite_all;

constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

constexpr std::uint32_t max_header_bytes = 8 * 1024;
constexpr std::size_t read_buffer_bytes = 64 * 1024;
constexpr std::size_t piece_bytes = 256 * 1024;
constexpr std::uint64_t writeback_bytes = 8 << 20;  // see the upload's sync_file_range
// Re-hashing a .part before a resume reads up to ~100 MB on the one blob-io thread: let the
// other connections run every 4 MiB.
constexpr std::size_t rehash_pieces_per_turn = 16;
// Lingering close after refusing a body: how long and how much of it to read and drop.
constexpr std::chrono::seconds linger_time{2};
constexpr std::uint64_t max_linger_bytes = 1024 * 1024;
constexpr std::string_view offset_field = "Parley-Upload-Offset";
constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";

// --- small POSIX helpers -------------------------------------------------------------------

bool fsync_dir(const std::filesystem::path& dir) {
  fd_guard d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d.valid() || ::fsync(d.get()) != 0) {
    log_warn() << "blob server: cannot fsync " << dir.string() << ": " << std::strerror(errno);
    return false;
  }
  return true;
}

// Creates the blob's fan-out directory (0700) if missing; a new one is made durable in its
// parent before any file in it is.
bool ensure_dir(const std::filesystem::path& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) {
    fsync_dir(dir.parent_path());
    return true;
  }
  if (errno == EEXIST) return true;
  log_warn() << "blob server: cannot create " << dir.string() << ": " << std::strerror(errno);
  return false;
}

// Incremental SHA-256 (OpenSSL's EVP).
class sha256 {
 public:
  sha256() : ctx_(EVP_MD_CTX_new()) {
    ok_ = ctx_ && EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1;
  }
  bool ok() const { return ok_; }
  void update(const char* data, std::size_t size) {
    if (ok_ && EVP_DigestUpdate(ctx_.get(), data, size) != 1) ok_ = false;
  }
  // Lowercase hex; empty if OpenSSL failed somewhere.
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (!ok_ || EVP_DigestFinal_ex(ctx_.get(), digest, &size) != 1) return {};
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < size; ++i) {
      out.push_back(digits[digest[i] >> 4]);
      out.push_back(digits[digest[i] & 0x0F]);
    }
    return out;
  }

 private:
  struct free_ctx {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };
  std::unique_ptr<EVP_MD_CTX, free_ctx> ctx_;
  bool ok_ = false;
};

// --- header values ---------------------------------------------------------------------------

std::string_view view(beast::string_view v) { return {v.data(), v.size()}; }

// Decimal digits only (leading zeros allowed, as HTTP allows them), fits 64 bits.
std::optional<std::uint64_t> parse_decimal(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || s.front() == '+' || s.front() == '-')
    return std::nullopt;
  return v;
}

// Content-Range of an upload: "bytes FIRST-LAST/TOTAL", FIRST <= LAST < TOTAL.
struct content_range {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::uint64_t total = 0;
};

std::optional<content_range> parse_content_range(std::string_view v) {
  constexpr std::string_view unit = "bytes ";
  if (!v.starts_with(unit)) return std::nullopt;
  v.remove_prefix(unit.size());
  const auto dash = v.find('-');
  const auto slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash)
    return std::nullopt;
  const auto first = parse_decimal(v.substr(0, dash));
  const auto last = parse_decimal(v.substr(dash + 1, slash - dash - 1));
  const auto total = parse_decimal(v.substr(slash + 1));
  // LAST below TOTAL (RFC 9110 §14.4), so that LAST - FIRST + 1 cannot wrap to a length.
  if (!first || !last || !total || *first > *last || *last >= *total) return std::nullopt;
  return content_range{*first, *last, *total};
}

// Range of a download, against a blob of `size` bytes.
enum class range_kind {
  whole,          // no usable Range: 200 with all of it
  part,           // 206 with [first, last]
  unsatisfiable,  // 416
};
struct byte_range {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
};

// "bytes=FIRST-", "bytes=FIRST-LAST" and "bytes=-SUFFIX". Anything else (another unit, several
// ranges, LAST < FIRST, bad syntax) is ignored as RFC 9110 §14.2 allows: the whole blob.
range_kind parse_range(std::string_view v, std::uint64_t size, byte_range& out) {
  constexpr std::string_view unit = "bytes=";
  if (!v.starts_with(unit)) return range_kind::whole;
  v.remove_prefix(unit.size());
  const auto dash = v.find('-');
  if (dash == std::string_view::npos || v.find(',') != std::string_view::npos)
    return range_kind::whole;
  const std::string_view first_text = v.substr(0, dash);
  const std::string_view last_text = v.substr(dash + 1);
  if (first_text.empty()) {
    const auto suffix = parse_decimal(last_text);
    if (!suffix) return range_kind::whole;
    if (*suffix == 0 || size == 0) return range_kind::unsatisfiable;
    out.first = size - std::min(*suffix, size);
    out.last = size - 1;
    return range_kind::part;
  }
  const auto first = parse_decimal(first_text);
  if (!first) return range_kind::whole;
  std::optional<std::uint64_t> last;
  if (!last_text.empty()) {
    last = parse_decimal(last_text);
    if (!last || *last < *first) return range_kind::whole;
  }
  if (*first >= size) return range_kind::unsatisfiable;
  out.first = *first;
  out.last = last ? std::min(*last, size - 1) : size - 1;
  return range_kind::part;
}

// --- bookkeeping on the blob-io thread ---------------------------------------------------------

// Counts one connection in state::open from accept to the end of its coroutine (or the
// destruction of a coroutine that never ran), and holds its place in state::sources as long.
// Holds the state alive.
class connection_ticket {
 public:
  connection_ticket(std::shared_ptr<blob_http_server::state> s, source_limit::slot source)
      : state_(std::move(s)), source_(std::move(source)) {
    ++state_->open;
  }
  connection_ticket(connection_ticket&& o) noexcept = default;
  connection_ticket& operator=(connection_ticket&&) = delete;
  ~connection_ticket() {
    if (state_) --state_->open;
  }
  blob_http_server::state& server() const { return *state_; }

 private:
  std::shared_ptr<blob_http_server::state> state_;
  source_limit::slot source_;  // declared after state_: given back before the state goes
};

// A connection: TCP, or TLS over it when the server has a certificate (common/plain_or_tls,
// as the client's blob_connection), holding the certificate's context it was made on.
class blob_stream {
 public:
  blob_stream(tcp::socket socket, std::shared_ptr<asio::ssl::context> tls)
      : context_(std::move(tls)) {
    if (context_) {
      connection_.make_tls(beast::tcp_stream(std::move(socket)), *context_);
    } else {
      connection_.make_plain(std::move(socket));
    }
  }
  template <class F>
  decltype(auto) with(F&& f) {
    return connection_.with(std::forward<F>(f));
  }
  beast::tcp_stream& transport() { return connection_.transport(); }
  void expires_after(std::chrono::steady_clock::duration d) { connection_.expires_after(d); }
  auto get_executor() { return transport().get_executor(); }
  // The TLS handshake (a no-op over TCP), within `timeout`; false if it failed.
  awaitable<bool> handshake(std::chrono::steady_clock::duration timeout) {
    auto* tls = connection_.tls();
    if (!tls) co_return true;
    transport().expires_after(timeout);
    auto [ec] = co_await tls->async_handshake(asio::ssl::stream_base::server, as_tuple_awaitable);
    if (ec) log_debug() << "blob server: TLS handshake failed: " << ec.message();
    co_return !ec;
  }

 private:
  std::shared_ptr<asio::ssl::context> context_;  // outlives the TLS stream made on it
  plain_or_tls connection_;
};

// A connection's stream in state::streams for as long as the connection runs.
class registered_stream {
 public:
  registered_stream(blob_http_server::state& s, blob_stream& stream)
      : state_(s), number_(s.next_number++) {
    state_.streams.emplace(number_, &stream.transport());
  }
  ~registered_stream() { state_.streams.erase(number_); }
  registered_stream(const registered_stream&) = delete;
  registered_stream& operator=(const registered_stream&) = delete;

 private:
  blob_http_server::state& state_;
  std::uint64_t number_;
};

// The right to write a blob's .part. Taking it takes it from any other upload of the blob;
// that one sees held() false at its next step and stops. Every file operation of an upload
// happens right after a held() check with no co_await in between, and everything runs on the
// one blob-io thread, so two uploads never write the same .part.
class upload_claim {
 public:
  upload_claim(blob_http_server::state& s, std::string id)
      : state_(s), id_(std::move(id)), number_(s.next_number++) {
    const auto [it, fresh] = state_.writers.insert_or_assign(id_, number_);
    if (!fresh) log_debug() << "blob server: a new upload of " << id_ << " takes over";
  }
  ~upload_claim() {
    const auto it = state_.writers.find(id_);
    if (it != state_.writers.end() && it->second == number_) state_.writers.erase(it);
  }
  upload_claim(const upload_claim&) = delete;
  upload_claim& operator=(const upload_claim&) = delete;

  bool held() const {
    const auto it = state_.writers.find(id_);
    return it != state_.writers.end() && it->second == number_;
  }

 private:
  blob_http_server::state& state_;
  std::string id_;
  std::uint64_t number_;
};

void log_exception(const char* what, const std::exception_ptr& e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    log_warn() << "blob server: " << what << " failed: " << x.what();
  } catch (...) {
    log_warn() << "blob server: " << what << " failed";
  }
}

// --- answers -----------------------------------------------------------------------------------

// One request being answered. What the handlers need of the request is copied here, because
// a PUT moves its parser (and the request with it) into a body parser.
struct exchange {
  exchange(blob_http_server::state& s, blob_stream& st, beast::flat_buffer& b)
      : server(s), stream(st), buffer(b) {}

  blob_http_server::state& server;
  blob_stream& stream;
  beast::flat_buffer& buffer;
  unsigned version = 11;
  bool client_keep_alive = true;
  bool head = false;
  // The request's body, or part of it, is still on the wire: the connection cannot carry
  // another request, so the answer closes it.
  bool body_unread = false;
  std::string label;  // "PUT <id>", for the log
};

using text_response = http::response<http::string_body>;

text_response make_text(const exchange& x, http::status status, std::string_view text) {
  text_response res{status, x.version};
  res.set(http::field::server, "parleyd");
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(x.client_keep_alive && !x.body_unread && !x.server.stopping);
  if (status == http::status::no_content) return res;  // neither body nor Content-Length
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  if (x.head) {
    res.content_length(0);
    return res;
  }
  if (!text.empty()) res.body().append(text).append("\n");
  res.prepare_payload();
  return res;
}

// A client may still be sending the body (or the rest of the request) an answer refused.
// Closing at once would reset the connection, and a reset can discard the answer from the
// client's receive buffer before it is read: read and drop a little more first (a lingering
// close, as nginx does), until the client closes, `linger_time` passes or `max_linger_bytes`
// were dropped.
awaitable<void> linger(blob_stream& stream, beast::flat_buffer& buffer) {
  beast::error_code ignored;
  stream.transport().socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream.expires_after(linger_time);
  buffer.consume(buffer.size());
  std::uint64_t dropped = 0;
  while (dropped < max_linger_bytes) {
    auto [ec, n] = co_await stream.with([&](auto& st) {
      return st.async_read_some(buffer.prepare(16 * 1024), as_tuple_awaitable);
    });
    if (ec) break;
    dropped += n;  // never committed: dropped
  }
}

// Writes `res`; true if the connection may carry another request.
awaitable<bool> send(exchange& x, text_response& res) {
  const bool keep_alive = res.keep_alive();
  x.stream.expires_after(x.server.opts.io_timeout);
  auto [ec, n] = co_await x.stream.with(
      [&](auto& st) { return http::async_write(st, res, as_tuple_awaitable); });
  if (ec) {
    log_debug() << "blob server: " << x.label << ": cannot answer: " << ec.message();
    co_return false;
  }
  if (!keep_alive && x.body_unread) co_await linger(x.stream, x.buffer);
  co_return keep_alive;
}

// `text` must outlive the call: a literal, or a local of the caller's frame. (Arguments of
// awaited coroutines here are trivially destructible on purpose: GCC 12 has had bugs with
// non-trivial temporaries in co_await expressions.)
awaitable<bool> answer(exchange& x, http::status status, std::string_view text,
                       std::optional<std::uint64_t> offset = std::nullopt) {
  auto res = make_text(x, status, text);
  if (offset) res.set(offset_field, std::to_string(*offset));
  co_return co_await send(x, res);
}

awaitable<bool> refuse_url(exchange& x, url_refusal why) {
  log_debug() << "blob server: " << x.label << ": " << to_text(why);
  const auto status =
      why == url_refusal::malformed ? http::status::bad_request : http::status::forbidden;
  co_return co_await answer(x, status, to_text(why));
}

awaitable<bool> storage_error(exchange& x) {
  co_return co_await answer(x, http::status::internal_server_error, "storage error");
}

// --- stored bytes ----------------------------------------------------------------------------

// Makes a .part of all its bytes the complete blob, durably: its data (fsync), its close, the
// rename, and the rename itself (the directory's fsync). False, logged, if any step failed:
// the .part (or a rename a crash may undo) is left for finish_full_part.
bool complete_part(fd_guard& fd, const local_blob_store::blob_files& files) {
  if (::fsync(fd.get()) != 0 || !fd.close() ||
      ::rename(files.partial.c_str(), files.complete.c_str()) != 0 || !fsync_dir(files.dir)) {
    log_warn() << "blob server: cannot complete " << files.complete.string() << ": "
               << std::strerror(errno);
    return false;
  }
  return true;
}

enum class rehash_outcome { done, read_failed, taken_over };

// Feeds the first `bytes` bytes of `fd` (a .part) into `hash`, read back from the disk through
// `piece` (piece_bytes long). Re-hashing reads up to ~100 MB on the one blob-io thread, so it
// lets the other connections run every rehash_pieces_per_turn pieces, and stops if a newer
// upload of the blob took `claim` meanwhile.
awaitable<rehash_outcome> rehash_stored(exchange& x, int fd, std::uint64_t bytes, sha256& hash,
                                        char* piece, const upload_claim& claim) {
  std::size_t pieces = 0;
  for (std::uint64_t at = 0; at < bytes;) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(piece_bytes, bytes - at));
    if (!pread_all(fd, piece, want, at)) co_return rehash_outcome::read_failed;
    hash.update(piece, want);
    at += want;
    if (++pieces % rehash_pieces_per_turn == 0) {
      const auto executor = x.stream.get_executor();
      co_await asio::post(executor, asio::use_awaitable);
      if (!claim.held()) co_return rehash_outcome::taken_over;
    }
  }
  co_return rehash_outcome::done;
}

enum class full_part {
  none,        // no .part of exactly the signed size
  completed,   // it matched the signed hash: now the complete blob
  discarded,   // it did not: deleted
  taken_over,  // a newer upload of the blob took it over while it was checked
  failed,      // the disk failed
};

// A .part that holds all `grant.size` bytes but is not the complete blob: the PUT that wrote
// it failed at its fsync or rename, or parleyd stopped between its last write and the rename.
// Its bytes are checked against the signed SHA-256 and it is completed (fsync, rename, the
// directory's fsync) or deleted. HEAD and PUT run this before they report an offset, so that
// an offset of `size` always means a complete blob: a client takes it as "done"
// (protocol.md §10), and a .part never completed would leave the blob undownloadable.
awaitable<full_part> finish_full_part(exchange& x, const local_blob_store::blob_files& files,
                                      const upload_grant& grant) {
  struct stat st {};
  if (::stat(files.partial.c_str(), &st) != 0 ||
      static_cast<std::uint64_t>(st.st_size) != grant.size)
    co_return full_part::none;
  upload_claim claim(x.server, grant.id);
  fd_guard fd(::open(files.partial.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) co_return errno == ENOENT ? full_part::none : full_part::failed;
  sha256 hash;
  if (!hash.ok()) co_return full_part::failed;
  auto piece = std::make_unique_for_overwrite<char[]>(piece_bytes);
  switch (co_await rehash_stored(x, fd.get(), grant.size, hash, piece.get(), claim)) {
    case rehash_outcome::done:
      break;
    case rehash_outcome::read_failed:
      log_warn() << "blob server: cannot read back " << files.partial.string();
      co_return full_part::failed;
    case rehash_outcome::taken_over:
      co_return full_part::taken_over;
  }
  if (hash.hex() != grant.sha256_hex) {
    if (::unlink(files.partial.c_str()) != 0 && errno != ENOENT) co_return full_part::failed;
    log_debug() << "blob server: " << x.label << ": a full .part with the wrong hash, deleted";
    co_return full_part::discarded;
  }
  if (!complete_part(fd, files)) co_return full_part::failed;
  log_debug() << "blob server: " << x.label << ": completed a full .part left by an earlier PUT";
  co_return full_part::completed;
}

// --- PUT -------------------------------------------------------------------------------------

awaitable<bool> handle_put(exchange& x, http::request_parser<http::empty_body>& parser,
                           blob_target target) {
  auto& s = x.server;
  const auto verdict = s.store.signer().verify_upload(target.id, target.query, wall_clock::now());
  if (!verdict) co_return co_await refuse_url(x, verdict.error());
  const upload_grant& grant = *verdict;
  const auto& req = parser.get();

  if (req.find(http::field::transfer_encoding) != req.end()) {
    co_return co_await answer(x, http::status::length_required,
                              "Content-Length required (chunked uploads are not supported)");
  }
  const auto length = parser.content_length();
  if (!length)
    co_return co_await answer(x, http::status::length_required, "Content-Length required");

  std::uint64_t start = 0;
  if (const auto it = req.find(http::field::content_range); it != req.end()) {
    const auto range = parse_content_range(view(it->value()));
    if (!range) {
      co_return co_await answer(x, http::status::bad_request,
                                "malformed Content-Range (bytes FIRST-LAST/TOTAL)");
    }
    if (range->total != grant.size) {
      const std::string text =
          "Content-Range total is not the signed size (" + std::to_string(grant.size) + ")";
      co_return co_await answer(x, http::status::bad_request, text);
    }
    if (range->last - range->first + 1 != *length) {
      co_return co_await answer(x, http::status::bad_request,
                                "Content-Range and Content-Length disagree");
    }
    start = range->first;
  }
  const bool wants_continue =
      x.version >= 11 && beast::iequals(req[http::field::expect], "100-continue");

  const auto files = s.store.files_of(grant.id);
  if (!files) co_return co_await storage_error(x);  // verify_upload checked the id already
  struct stat st {};
  if (::stat(files->complete.c_str(), &st) == 0) {
    co_return co_await answer(x, http::status::conflict, "already complete",
                              static_cast<std::uint64_t>(st.st_size));
  }

  // A .part of the full size left by an earlier PUT is completed (or deleted) first: see
  // finish_full_part.
  switch (co_await finish_full_part(x, *files, grant)) {
    case full_part::completed:
      co_return co_await answer(x, http::status::conflict, "already complete", grant.size);
    case full_part::taken_over:
      co_return co_await answer(x, http::status::conflict, "another upload of this blob took over");
    case full_part::failed:
      co_return co_await storage_error(x);
    case full_part::none:
    case full_part::discarded:
      break;
  }

  if (start > grant.size || *length > grant.size - start) {
    upload_claim stop_others(s, grant.id);  // the .part goes: no other upload may go on with it
    if (::unlink(files->partial.c_str()) != 0 && errno != ENOENT)
      log_warn() << "blob server: cannot delete " << files->partial.string();
    const std::string text = "past the signed size (" + std::to_string(grant.size) + " bytes)";
    co_return co_await answer(x, http::status::payload_too_large, text);
  }
  if (!ensure_dir(files->dir)) co_return co_await storage_error(x);

  // A PUT without Content-Range starts over; one with it continues exactly where the .part
  // ends. A continuation is checked against the .part before it takes the blob over from an
  // upload that may still be writing it: a refused PUT stops nobody. (No co_await between the
  // check and the claim: that upload cannot write in between.)
  fd_guard fd(start == 0 ? -1 : ::open(files->partial.c_str(), O_RDWR | O_CLOEXEC));
  if (start > 0) {
    if (!fd.valid() && errno == ENOENT) {
      co_return co_await answer(x, http::status::conflict, "offset mismatch", std::uint64_t{0});
    }
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0) {
      log_warn() << "blob server: cannot open " << files->partial.string() << ": "
                 << std::strerror(errno);
      co_return co_await storage_error(x);
    }
    const auto stored = static_cast<std::uint64_t>(st.st_size);
    if (stored != start) {
      co_return co_await answer(x, http::status::conflict, "offset mismatch", stored);
    }
  }
  upload_claim claim(s, grant.id);
  if (start == 0) {
    fd.reset(::open(files->partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid()) {
      log_warn() << "blob server: cannot open " << files->partial.string() << ": "
                 << std::strerror(errno);
      co_return co_await storage_error(x);
    }
  }

  sha256 hash;
  if (!hash.ok()) co_return co_await storage_error(x);
  auto piece = std::make_unique_for_overwrite<char[]>(piece_bytes);
  // Resuming: the hash covers the bytes already stored, read back from the disk.
  switch (co_await rehash_stored(x, fd.get(), start, hash, piece.get(), claim)) {
    case rehash_outcome::done:
      break;
    case rehash_outcome::read_failed:
      log_warn() << "blob server: cannot read back " << files->partial.string();
      co_return co_await storage_error(x);
    case rehash_outcome::taken_over:
      co_return co_await answer(x, http::status::conflict, "another upload of this blob took over");
  }

  if (wants_continue && !parser.is_done()) {
    x.stream.expires_after(s.opts.io_timeout);
    auto [ec, n] = co_await x.stream.with([&](auto& st) {
      return asio::async_write(st, asio::buffer(continue_line.data(), continue_line.size()),
                               as_tuple_awaitable);
    });
    if (ec) co_return false;
  }

  // The body, as it arrives: collected into pieces of up to 256 KiB, each hashed and written
  // when full (or when the body or the connection ends). The timeout is per read, so a slow
  // link is fine as long as it moves.
  http::request_parser<http::buffer_body> body(std::move(parser));
  body.body_limit(boost::none);  // Content-Length was checked against the signed size
  auto& slot = body.get().body();
  slot.data = piece.get();
  slot.size = piece_bytes;
  const std::uint64_t end = start + *length;
  std::uint64_t stored = start;
  std::uint64_t written_back = start;
  while (!body.is_done()) {
    x.stream.expires_after(s.opts.io_timeout);
    auto [ec, n] = co_await x.stream.with(
        [&](auto& st) { return http::async_read_some(st, x.buffer, body, as_tuple_awaitable); });
    if (ec == http::error::need_buffer) ec = {};
    const std::size_t got = piece_bytes - slot.size;
    if (got > 0 && (got == piece_bytes || body.is_done() || ec)) {
      if (!claim.held()) {
        co_return co_await answer(x, http::status::conflict,
                                  "another upload of this blob took over");
      }
      if (got > end - stored) {  // the parser holds the body to Content-Length; counted anyway
        ::unlink(files->partial.c_str());
        co_return co_await answer(x, http::status::payload_too_large, "past the signed size");
      }
      hash.update(piece.get(), got);
      if (!pwrite_all(fd.get(), piece.get(), got, stored)) {
        log_warn() << "blob server: cannot write " << files->partial.string() << ": "
                   << std::strerror(errno);
        co_return co_await storage_error(x);
      }
      stored += got;
      // Writeback starts behind the upload, a few MiB at a time, instead of all of it at the
      // final fsync: the upload's end waits for little, and the disk never holds more than
      // writeback_bytes of this file's dirty pages for the message store's syncs to queue
      // behind (docs/performance.md, issue 15). Advisory: an error here shows at the fsync.
      if (stored - written_back >= writeback_bytes) {
        ::sync_file_range(fd.get(), static_cast<off_t>(written_back),
                          static_cast<off_t>(stored - written_back), SYNC_FILE_RANGE_WRITE);
        written_back = stored;
      }
      slot.data = piece.get();
      slot.size = piece_bytes;
    }
    if (ec) {
      // Cut or stalled: the .part keeps what arrived, for a PUT with Content-Range to continue.
      log_debug() << "blob server: " << x.label << ": upload stopped at " << stored << " of "
                  << grant.size << " bytes: " << ec.message();
      co_return false;
    }
  }
  x.body_unread = false;

  if (!claim.held()) {
    co_return co_await answer(x, http::status::conflict, "another upload of this blob took over");
  }
  if (stored < grant.size) {
    co_return co_await answer(x, http::status::no_content, {}, stored);
  }
  if (hash.hex() != grant.sha256_hex) {
    ::unlink(files->partial.c_str());
    log_debug() << "blob server: " << x.label << ": hash mismatch";
    co_return co_await answer(x, http::status::bad_request, "hash mismatch");
  }
  // A failure here leaves a .part of the full size (or a rename that a crash may undo): the
  // client's retry finds it with HEAD, which completes it (finish_full_part).
  if (!complete_part(fd, *files)) co_return co_await storage_error(x);
  log_debug() << "blob server: " << x.label << ": complete, " << grant.size << " bytes";
  co_return co_await answer(x, http::status::created, "created", grant.size);
}

// --- HEAD ------------------------------------------------------------------------------------

awaitable<bool> handle_head(exchange& x, blob_target target) {
  auto& s = x.server;
  const auto verdict = s.store.signer().verify_upload(target.id, target.query, wall_clock::now());
  if (!verdict) co_return co_await refuse_url(x, verdict.error());
  const auto files = s.store.files_of(verdict->id);
  if (!files) co_return co_await storage_error(x);
  struct stat st {};
  if (::stat(files->complete.c_str(), &st) == 0)
    co_return co_await answer(x, http::status::ok, {}, static_cast<std::uint64_t>(st.st_size));
  // `size` only for a complete blob: a .part of the full size is completed (or deleted) first.
  if (co_await finish_full_part(x, *files, *verdict) == full_part::failed)
    co_return co_await storage_error(x);
  std::uint64_t offset = 0;
  if (::stat(files->complete.c_str(), &st) == 0 || ::stat(files->partial.c_str(), &st) == 0)
    offset = static_cast<std::uint64_t>(st.st_size);
  co_return co_await answer(x, http::status::ok, {}, offset);
}

// --- GET -------------------------------------------------------------------------------------

awaitable<bool> handle_get(exchange& x, const http::request<http::empty_body>& req,
                           blob_target target) {
  auto& s = x.server;
  const auto verdict = s.store.signer().verify_download(target.id, target.query, wall_clock::now());
  if (!verdict) co_return co_await refuse_url(x, verdict.error());
  const auto files = s.store.files_of(verdict->id);
  if (!files) co_return co_await storage_error(x);
  fd_guard fd(::open(files->complete.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) co_return co_await answer(x, http::status::not_found, "no such blob");
    log_warn() << "blob server: cannot open " << files->complete.string() << ": "
               << std::strerror(errno);
    co_return co_await storage_error(x);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) co_return co_await storage_error(x);
  const auto size = static_cast<std::uint64_t>(st.st_size);

  byte_range range{0, size == 0 ? 0 : size - 1};
  bool partial = false;
  if (const auto it = req.find(http::field::range); it != req.end()) {
    switch (parse_range(view(it->value()), size, range)) {
      case range_kind::unsatisfiable: {
        auto res = make_text(x, http::status::range_not_satisfiable, "range not satisfiable");
        res.set(http::field::content_range, "bytes */" + std::to_string(size));
        co_return co_await send(x, res);
      }
      case range_kind::part:
        partial = true;
        break;
      case range_kind::whole:
        range = byte_range{0, size == 0 ? 0 : size - 1};
        break;
    }
  }
  const std::uint64_t length = size == 0 ? 0 : range.last - range.first + 1;

  http::response<http::buffer_body> res{partial ? http::status::partial_content : http::status::ok,
                                        x.version};
  res.set(http::field::server, "parleyd");
  res.set(http::field::content_type, "application/octet-stream");
  res.set(http::field::accept_ranges, "bytes");
  res.set(http::field::cache_control, "no-store");
  if (partial) {
    res.set(http::field::content_range, "bytes " + std::to_string(range.first) + "-" +
                                            std::to_string(range.last) + "/" +
                                            std::to_string(size));
  }
  res.content_length(length);
  res.keep_alive(x.client_keep_alive && !x.body_unread && !s.stopping);
  res.body().data = nullptr;
  res.body().more = true;
  http::response_serializer<http::buffer_body> sr{res};
  x.stream.expires_after(s.opts.io_timeout);
  auto [hec, hn] = co_await x.stream.with(
      [&](auto& st) { return http::async_write_header(st, sr, as_tuple_awaitable); });
  if (hec) co_return false;

  // The bytes, read from the file 256 KiB at a time as the client takes them; the timeout is
  // per write, so a slow client is fine as long as it moves.
  auto piece = std::make_unique_for_overwrite<char[]>(piece_bytes);
  std::uint64_t handed = 0;  // bytes given to the serializer so far
  bool need_piece = true;
  while (!sr.is_done()) {
    if (need_piece) {
      const auto want =
          static_cast<std::size_t>(std::min<std::uint64_t>(piece_bytes, length - handed));
      if (want > 0 && !pread_all(fd.get(), piece.get(), want, range.first + handed)) {
        // Nothing can be said after the header: closing short of Content-Length tells the client.
        log_warn() << "blob server: cannot read " << files->complete.string();
        co_return false;
      }
      res.body().data = want > 0 ? piece.get() : nullptr;
      res.body().size = want;
      res.body().more = handed + want < length;
      handed += want;
      need_piece = false;
    }
    x.stream.expires_after(s.opts.io_timeout);
    auto [ec, n] = co_await x.stream.with(
        [&](auto& st) { return http::async_write_some(st, sr, as_tuple_awaitable); });
    if (ec == http::error::need_buffer) {
      need_piece = true;
      continue;
    }
    if (ec) {
      log_debug() << "blob server: " << x.label << ": download stopped after at most " << handed
                  << " of " << length << " bytes: " << ec.message();
      co_return false;
    }
  }
  co_return res.keep_alive();
}

// --- connections -----------------------------------------------------------------------------

// One request whose header has been read; true if the connection may carry another.
awaitable<bool> handle(exchange& x, http::request_parser<http::empty_body>& parser) {
  const auto& req = parser.get();
  x.version = req.version();
  x.client_keep_alive = req.keep_alive();
  x.head = req.method() == http::verb::head;
  x.body_unread = !parser.is_done();
  const auto target = split_blob_target(view(req.target()));
  x.label = std::string(view(req.method_string())) + " " +
            (target ? std::string(target->id) : std::string("(not a blob)"));
  if (!target) co_return co_await answer(x, http::status::not_found, "not found");
  switch (req.method()) {
    case http::verb::put:
      co_return co_await handle_put(x, parser, *target);
    case http::verb::head:
      co_return co_await handle_head(x, *target);
    case http::verb::get:
      co_return co_await handle_get(x, req, *target);
    default:
      break;
  }
  auto res = make_text(x, http::status::method_not_allowed, "only GET, HEAD and PUT here");
  res.set(http::field::allow, "GET, HEAD, PUT");
  co_return co_await send(x, res);
}

// The answer to a request header that could not be read, or none when the peer just went
// away (end of stream, reset, timeout): nobody to answer then.
std::optional<text_response> answer_unreadable(const beast::error_code& ec) {
  std::optional<http::status> status;
  if (ec == http::error::header_limit) {
    status = http::status::request_header_fields_too_large;
  } else if (ec.category() == http::make_error_code(http::error::bad_version).category() &&
             ec != http::error::end_of_stream && ec != http::error::partial_message) {
    status = http::status::bad_request;
  }
  if (!status) return std::nullopt;
  text_response res{*status, 11};
  res.set(http::field::server, "parleyd");
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.keep_alive(false);
  res.body() = std::string(http::obsolete_reason(*status)) + ": " + ec.message() + "\n";
  res.prepare_payload();
  return res;
}

awaitable<void> serve(connection_ticket ticket, tcp::socket socket,
                      std::shared_ptr<asio::ssl::context> tls) {
  auto& s = ticket.server();
  blob_stream stream(std::move(socket), std::move(tls));
  registered_stream registration(s, stream);
  if (s.stopping) co_return;
  if (!co_await stream.handshake(s.opts.io_timeout)) co_return;
  // Reserved whole at once: Beast reads max(512, capacity - size) bytes at a time, so a
  // buffer grown only as far as a request's header read a body 512 bytes per system call
  // (~200,000 reads for 100 MB; docs/performance.md, issue 15).
  beast::flat_buffer buffer(read_buffer_bytes);
  buffer.reserve(read_buffer_bytes);
  for (;;) {
    http::request_parser<http::empty_body> parser;
    parser.header_limit(max_header_bytes);
    parser.body_limit(boost::none);  // a PUT's Content-Length is held to its signed size
    stream.expires_after(s.opts.io_timeout);
    auto [ec, n] = co_await stream.with(
        [&](auto& st) { return http::async_read_header(st, buffer, parser, as_tuple_awaitable); });
    if (ec) {
      if (auto res = answer_unreadable(ec)) {
        log_debug() << "blob server: unreadable request: " << ec.message();
        stream.expires_after(s.opts.io_timeout);
        auto [wec, wn] = co_await stream.with(
            [&](auto& st) { return http::async_write(st, *res, as_tuple_awaitable); });
        if (!wec) co_await linger(stream, buffer);
      }
      break;
    }
    exchange x(s, stream, buffer);
    const bool again = co_await handle(x, parser);
    if (!again || s.stopping) break;
  }
  beast::error_code ignored;
  stream.transport().socket().shutdown(tcp::socket::shutdown_send, ignored);
}

// Over the connection limit: one non-blocking write of a fixed answer (a new socket's buffer
// always has room for it), then close. Nothing is read and nothing waits.
void refuse_busy(tcp::socket& socket) {
  static constexpr std::string_view busy =
      "HTTP/1.1 503 Service Unavailable\r\nServer: parleyd\r\nRetry-After: 5\r\n"
      "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 33\r\n"
      "Connection: close\r\n\r\ntoo many connections; try later\r\n";
  boost::system::error_code ignored;
  socket.non_blocking(true, ignored);
  socket.write_some(asio::buffer(busy.data(), busy.size()), ignored);
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
}

awaitable<void> accept_loop(std::shared_ptr<blob_http_server::state> s) {
  for (;;) {
    auto [ec, socket] = co_await s->acceptor.async_accept(as_tuple_awaitable);
    if (ec) {
      if (s->stopping || !s->acceptor.is_open() || ec == asio::error::operation_aborted) co_return;
      // Out of file descriptors (EMFILE) and the like: back off instead of spinning.
      log_warn() << "blob server: accept failed: " << ec.message();
      asio::steady_timer pause(s->acceptor.get_executor(), std::chrono::milliseconds(50));
      co_await pause.async_wait(as_tuple_awaitable);
      continue;
    }
    if (s->open >= s->opts.max_connections) {
      log_debug() << "blob server: " << s->open << " connections open; refusing one";
      refuse_busy(socket);
      continue;
    }
    boost::system::error_code ignored;
    source_limit::slot source;
    if (const auto peer = socket.remote_endpoint(ignored); !ignored) {
      auto held = s->sources.acquire(peer.address());
      if (!held) {
        log_debug() << "blob server: " << peer.address().to_string()
                    << " holds its share of connections; refusing one";
        refuse_busy(socket);
        continue;
      }
      source = std::move(*held);
    }
    socket.set_option(tcp::no_delay(true), ignored);
    std::shared_ptr<asio::ssl::context> tls;
    {
      std::lock_guard lock(s->tls_mutex);
      tls = s->tls;
    }
    asio::co_spawn(
        s->acceptor.get_executor(),
        serve(connection_ticket(s, std::move(source)), std::move(socket), std::move(tls)),
        [](const std::exception_ptr& e) { log_exception("a connection", e); });
  }
}

}  // namespace

blob_http_server::blob_http_server(local_blob_store& store) : blob_http_server(store, options{}) {}

blob_http_server::blob_http_server(local_blob_store& store, options opts)
    : store_(store),
      options_(opts),
      io_(std::make_unique<asio::io_context>(1)),
      state_(std::make_shared<state>(*io_, store_, options_)) {}

blob_http_server::blob_http_server(local_blob_store& store, std::size_t max_connections)
    : blob_http_server(store, [max_connections] {
        options o;
        o.max_connections = max_connections;
        return o;
      }()) {}

blob_http_server::~blob_http_server() { stop(); }

tcp::endpoint blob_http_server::start(const tcp::endpoint& endpoint) {
  std::lock_guard lock(control_);
  if (started_) throw std::logic_error("blob_http_server: start() called twice");
  auto& acceptor = state_->acceptor;
  try {
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);
    endpoint_ = acceptor.local_endpoint();
  } catch (...) {
    boost::system::error_code ignored;
    acceptor.close(ignored);
    throw;
  }
  started_ = true;
  asio::co_spawn(*io_, accept_loop(state_),
                 [](const std::exception_ptr& e) { log_exception("the accept loop", e); });
  std::promise<void> done;
  finished_ = done.get_future();
  thread_ = std::thread([io = io_.get(), done = std::move(done)]() mutable {
    try {
      io->run();
    } catch (const std::exception& e) {
      log_error() << "blob server: event loop failed: " << e.what();
    }
    done.set_value();
  });
  name_thread(thread_, "blob-io");
  log_info() << "blob server listening on " << endpoint_;
  return endpoint_;
}

void blob_http_server::set_tls(std::shared_ptr<asio::ssl::context> context) {
  std::lock_guard lock(state_->tls_mutex);
  state_->tls = std::move(context);
}

tcp::endpoint blob_http_server::local_endpoint() const {
  std::lock_guard lock(control_);
  return endpoint_;
}

void blob_http_server::stop() {
  std::lock_guard lock(control_);
  if (!thread_.joinable()) return;
  asio::post(*io_, [s = state_] {
    s->stopping = true;
    boost::system::error_code ignored;
    s->acceptor.close(ignored);
    for (auto& [number, stream] : s->streams) stream->close();
  });
  if (finished_.wait_for(options_.stop_deadline) != std::future_status::ready) {
    log_warn() << "blob server: connections still open after " << options_.stop_deadline.count()
               << " ms; stopping anyway";
    io_->stop();
  }
  thread_.join();
  log_info() << "blob server stopped";
}

}  // namespace parley::media
